// OpenClaw plugin: /feedback in the chat teaches the CLaaS adapter that answered.
//
// The agent's model is served by CLaaS (an OpenAI-compatible provider), so each
// assistant turn in the session transcript carries `responseId`, the CLaaS
// completion id. /feedback sends the text with that id to CLaaS's
// POST /v1/feedback (without waiting: CLaaS queues a durable job and the chat
// goes on); the update trains on the exact tokens that were served.

import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

import { ClaasClient } from "./src/client.js";
import { Commands } from "./src/commands.js";

/** The plugin's settings: its config block, with secrets and defaults from the environment. */
export function resolveSettings(pluginConfig = {}, env = process.env) {
  const apiKeyEnv = pluginConfig.apiKeyEnv || "CLAAS_API_KEY";
  return {
    claasUrl: pluginConfig.claasUrl || env.CLAAS_URL || "http://127.0.0.1:8080",
    apiKey: env[apiKeyEnv] || "",
    provider: pluginConfig.provider || "claas",
    adapters: pluginConfig.adapters || {},
    defaultAdapter: pluginConfig.defaultAdapter || null,
    feedbackBatchSize: pluginConfig.feedbackBatchSize || 1,
    timeoutMs: pluginConfig.timeoutMs || 10000,
  };
}

async function readTranscript(ctx) {
  const { readVisibleSessionTranscriptMessageEntries } = await import(
    "openclaw/plugin-sdk/session-transcript-runtime"
  );
  return readVisibleSessionTranscriptMessageEntries({
    sessionKey: ctx.sessionKey,
    sessionId: ctx.sessionId,
    ...(ctx.agentId ? { agentId: ctx.agentId } : {}),
  });
}

export default definePluginEntry({
  id: "claas",
  name: "CLaaS feedback",
  description: "/feedback teaches the CLaaS adapter that answered this chat",
  register(api) {
    const settings = resolveSettings(api.pluginConfig || {});
    const client = new ClaasClient({ url: settings.claasUrl, apiKey: settings.apiKey, timeoutMs: settings.timeoutMs });
    const commands = new Commands({ client, settings, readTranscript, logger: api.logger });
    const guarded = (name, handler) => async (ctx) => {
      try {
        return await handler.call(commands, ctx);
      } catch (error) {
        api.logger?.error?.(`claas: /${name} failed: ${error?.stack || error}`);
        return { text: `CLaaS: /${name} failed: ${error?.message || error}` };
      }
    };
    api.registerCommand({
      name: "feedback",
      description: "Teach the assistant: /feedback <what to change>",
      acceptsArgs: true,
      handler: guarded("feedback", commands.feedback),
    });
    api.registerCommand({
      name: "feedback-status",
      description: "The state of your last feedback (or /feedback-status <job id>)",
      acceptsArgs: true,
      handler: guarded("feedback-status", commands.feedbackStatus),
    });
    api.registerCommand({
      name: "rollback",
      description: "Serve an earlier adapter version: /rollback [version]",
      acceptsArgs: true,
      handler: guarded("rollback", commands.rollback),
    });
    api.registerCommand({
      name: "adapter",
      description: "The adapter answering here: live version and pending jobs",
      acceptsArgs: false,
      handler: guarded("adapter", commands.adapter),
    });
  },
});
