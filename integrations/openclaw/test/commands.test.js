// The commands against a running CLaaS server (started by tests/openclaw/test_plugin_commands.py,
// which passes its URL, key, adapter and two completion ids in the environment).
// Run: CLAAS_URL=... CLAAS_API_KEY=... CLAAS_ADAPTER=... CLAAS_COMPLETIONS=id1,id2 node --test test/commands.test.js

import assert from "node:assert/strict";
import { test } from "node:test";

import { ClaasClient } from "../src/client.js";
import { Commands, adapterFor, lastResponseId } from "../src/commands.js";

const { CLAAS_URL, CLAAS_API_KEY, CLAAS_ADAPTER, CLAAS_COMPLETIONS } = process.env;
const [FIRST, SECOND] = (CLAAS_COMPLETIONS || "").split(",");

function transcript(...ids) {
  return ids.flatMap((id) => [
    { message: { role: "user", content: "Hi" } },
    { message: { role: "assistant", content: [{ type: "text", text: "Hello" }], responseId: id } },
  ]);
}

function commands(entries, settings = {}) {
  const client = new ClaasClient({ url: CLAAS_URL, apiKey: CLAAS_API_KEY });
  return new Commands({
    client,
    settings: { provider: "claas", adapters: {}, feedbackBatchSize: 1, ...settings },
    readTranscript: async () => entries,
  });
}

const ctx = (args, sessionKey = "agent:main:test") => ({
  args,
  sessionKey,
  agentId: "main",
  config: { agents: { defaults: { model: { primary: `claas/${CLAAS_ADAPTER}` } } } },
});

test("the adapter comes from the map, the agent's model, or the default", () => {
  const config = { agents: { defaults: { model: "claas/a/default" }, list: [{ id: "ops", model: { primary: "other/x" } }] } };
  const settings = { provider: "claas", adapters: { main: "a/mapped" }, defaultAdapter: "a/fallback" };
  assert.equal(adapterFor(settings, config, "main"), "a/mapped");
  assert.equal(adapterFor({ ...settings, adapters: {} }, config, "main"), "a/default");
  assert.equal(adapterFor(settings, config, "ops"), "a/fallback");
  assert.equal(adapterFor({ provider: "claas", adapters: {} }, config, "ops"), null);
});

test("the last answer is the last assistant turn with a responseId", () => {
  assert.equal(lastResponseId(transcript("a", "b")), "b");
  assert.equal(lastResponseId([{ message: { role: "assistant", content: "no id" } }]), null);
  assert.equal(lastResponseId([]), null);
});

test("feedback needs text and an answer", async () => {
  assert.match((await commands(transcript(FIRST)).feedback(ctx(" "))).text, /^Usage: \/feedback/);
  assert.match((await commands([]).feedback(ctx("Shorter."))).text, /no answer in this session/);
});

test("a batch of two feedbacks is sent as one job", async () => {
  const plugin = commands(transcript(FIRST), { feedbackBatchSize: 2 });
  const held = await plugin.feedback(ctx("Shorter."));
  assert.match(held.text, /feedback 1\/2 noted/);
  assert.match((await plugin.adapter(ctx(""))).text, /1 feedback\(s\) held for the next batch/);
  plugin.readTranscript = async () => transcript(FIRST, SECOND);
  const sent = await plugin.feedback(ctx("No lists."));
  const match = sent.text.match(/2 feedbacks queued as (job-\S+) for (\S+) /);
  assert.ok(match, sent.text);
  assert.equal(match[2], CLAAS_ADAPTER);
  const status = await plugin.feedbackStatus(ctx(""));
  assert.match(status.text, new RegExp(`job ${match[1]} on ${CLAAS_ADAPTER}: (queued|running|applied)`));
});

test("CLaaS errors and an unreachable server are replies", async () => {
  const missing = await commands(transcript("chatcmpl-missing")).feedback(ctx("Shorter."));
  assert.match(missing.text, /^CLaaS could not take the feedback: .*\(completion_not_found\)$/);
  const bad = await commands([]).rollback(ctx("two"));
  assert.match(bad.text, /^Usage: \/rollback/);
  const offline = new Commands({
    client: new ClaasClient({ url: "http://127.0.0.1:9", timeoutMs: 2000 }),
    settings: { provider: "claas", adapters: {}, feedbackBatchSize: 1 },
    readTranscript: async () => [],
  });
  assert.match((await offline.adapter(ctx(""))).text, /unreachable/);
});
