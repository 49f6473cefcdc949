// The chat commands. Each handler answers {text} and never throws: a CLaaS
// error, an unknown adapter or an unreachable server becomes a chat reply.

import { createHash } from "node:crypto";

const USAGE = "Usage: /feedback <what to change>, e.g. /feedback Shorter, please.";

/**
 * Which adapter serves an agent: the plugin's `adapters` map, else the agent's
 * model when it is `<provider>/<namespace>/<name>`, else `defaultAdapter`.
 */
export function adapterFor(settings, openclawConfig, agentId) {
  const id = agentId || "main";
  if (settings.adapters && settings.adapters[id]) return settings.adapters[id];
  const agents = openclawConfig?.agents || {};
  const entry = (agents.list || []).find((agent) => agent?.id === id);
  const model = modelRef(entry?.model) || modelRef(agents.defaults?.model);
  const prefix = `${settings.provider}/`;
  if (model && model.startsWith(prefix) && model.slice(prefix.length).includes("/")) {
    return model.slice(prefix.length);
  }
  return settings.defaultAdapter || null;
}

function modelRef(model) {
  if (typeof model === "string") return model;
  return typeof model?.primary === "string" ? model.primary : null;
}

/** The CLaaS completion id of the last assistant answer in the transcript entries. */
export function lastResponseId(entries) {
  for (let i = entries.length - 1; i >= 0; i -= 1) {
    const message = entries[i]?.message;
    if (message?.role === "assistant" && typeof message.responseId === "string" && message.responseId) {
      return message.responseId;
    }
  }
  return null;
}

function failure(result, what) {
  if (result.code === "adapter_not_found") return `CLaaS: ${what}: ${result.message}`;
  return `CLaaS could not ${what}: ${result.message} (${result.code})`;
}

function describeJob(job) {
  const base = `job ${job.id} on ${job.adapter_id}: ${job.status}`;
  if (job.status === "applied") return `${base}, version ${job.version} is live (from ${job.parent_version})`;
  if (job.error) return `${base} (${job.error})`;
  return base;
}

export class Commands {
  /**
   * @param {{client: import("./client.js").ClaasClient, settings: object,
   *   readTranscript: (ctx: object) => Promise<object[]>, logger?: object}} deps
   */
  constructor({ client, settings, readTranscript, logger }) {
    this.client = client;
    this.settings = settings;
    this.readTranscript = readTranscript;
    this.logger = logger;
    this.lastJob = new Map(); // session key -> job id
    this.pending = new Map(); // session key -> [{completion_id, feedback}]
  }

  sessionOf(ctx) {
    return ctx.sessionKey || ctx.sessionId || "default";
  }

  async feedback(ctx) {
    const text = (ctx.args || "").trim();
    if (!text) return { text: USAGE };
    let entries;
    try {
      entries = await this.readTranscript(ctx);
    } catch (error) {
      this.logger?.warn?.(`claas: reading the transcript failed: ${error}`);
      return { text: `CLaaS: could not read this session's transcript (${error?.message || error}).` };
    }
    const completionId = lastResponseId(entries);
    if (!completionId) {
      return { text: "CLaaS: there is no answer in this session to give feedback on yet." };
    }
    const session = this.sessionOf(ctx);
    const batchSize = this.settings.feedbackBatchSize;
    if (batchSize > 1) {
      const held = [...(this.pending.get(session) || []), { completion_id: completionId, feedback: text }];
      if (held.length < batchSize) {
        this.pending.set(session, held);
        return { text: `CLaaS: feedback ${held.length}/${batchSize} noted; it is sent with the next ${batchSize - held.length}.` };
      }
      this.pending.delete(session);
      return this.submitted(session, await this.client.submitBatch(held), held.length);
    }
    const key = idempotencyKey(session, completionId, text);
    return this.submitted(session, await this.client.submitFeedback(completionId, text, key), 1);
  }

  submitted(session, result, count) {
    if (!result.ok) return { text: failure(result, "take the feedback") };
    const job = result.body;
    this.lastJob.set(session, job.id);
    const what = count > 1 ? `${count} feedbacks` : "Feedback";
    return {
      text: `CLaaS: ${what} queued as ${job.id} for ${job.adapter_id} (${job.status}). ` +
        "The next answer uses the new version once it is applied; /feedback-status follows it.",
    };
  }

  async feedbackStatus(ctx) {
    const requested = (ctx.args || "").trim();
    const jobId = requested || this.lastJob.get(this.sessionOf(ctx));
    if (jobId) {
      const result = await this.client.job(jobId);
      return { text: result.ok ? `CLaaS: ${describeJob(result.body)}` : failure(result, `find ${jobId}`) };
    }
    const adapter = adapterFor(this.settings, ctx.config, ctx.agentId);
    if (!adapter) return { text: "CLaaS: no feedback from this session yet, and no adapter is mapped to this agent." };
    const result = await this.client.jobs(adapter, 5);
    if (!result.ok) return { text: failure(result, `list the jobs of ${adapter}`) };
    const jobs = result.body.data || [];
    if (!jobs.length) return { text: `CLaaS: ${adapter} has no feedback jobs yet.` };
    return { text: `CLaaS: latest jobs of ${adapter}:\n` + jobs.map((job) => `- ${describeJob(job)}`).join("\n") };
  }

  async rollback(ctx) {
    const adapter = adapterFor(this.settings, ctx.config, ctx.agentId);
    if (!adapter) return { text: "CLaaS: no adapter is mapped to this agent." };
    const arg = (ctx.args || "").trim();
    let version;
    if (arg) {
      if (!/^\d+$/.test(arg)) return { text: "Usage: /rollback [version], e.g. /rollback 2 (default: the live version's parent)." };
      version = Number(arg);
    } else {
      const versions = await this.client.versions(adapter);
      if (!versions.ok) return { text: failure(versions, `read the versions of ${adapter}`) };
      const live = (versions.body.data || []).find((v) => v.live);
      if (!live || live.parent === null || live.parent === undefined) {
        return { text: `CLaaS: ${adapter} is at version ${versions.body.live_version}, which has no earlier version.` };
      }
      version = live.parent;
    }
    const result = await this.client.rollback(adapter, version);
    if (!result.ok) return { text: failure(result, `roll ${adapter} back to version ${version}`) };
    return { text: `CLaaS: ${adapter} now serves version ${result.body.version}.` };
  }

  async adapter(ctx) {
    const adapter = adapterFor(this.settings, ctx.config, ctx.agentId);
    if (!adapter) return { text: "CLaaS: no adapter is mapped to this agent." };
    const info = await this.client.adapter(adapter);
    if (!info.ok) return { text: failure(info, `read ${adapter}`) };
    const jobs = await this.client.jobs(adapter, 50);
    const waiting = jobs.ok
      ? (jobs.body.data || []).filter((job) => job.status === "queued" || job.status === "running").length
      : null;
    const pending = waiting === null ? `pending jobs unknown (${jobs.message})` : `${waiting} pending job(s)`;
    const held = (this.pending.get(this.sessionOf(ctx)) || []).length;
    const noted = held ? `, ${held} feedback(s) held for the next batch` : "";
    return {
      text: `CLaaS: ${adapter} serves version ${info.body.live_version} (${info.body.versions} kept), ${pending}${noted}.`,
    };
  }
}

function idempotencyKey(session, completionId, text) {
  const digest = createHash("sha256").update(`${session}\n${completionId}\n${text}`).digest("hex");
  return `openclaw-${digest.slice(0, 48)}`;
}
