// The CLaaS HTTP API, as far as the plugin needs it. Every call resolves to
// {ok: true, status, body} or {ok: false, status, code, message}; nothing throws,
// so a command can always answer in the chat.

const DEFAULT_URL = "http://127.0.0.1:8080";

export class ClaasClient {
  /**
   * @param {{url?: string, apiKey?: string, timeoutMs?: number, fetchImpl?: typeof fetch}} options
   */
  constructor({ url, apiKey, timeoutMs = 10000, fetchImpl = fetch } = {}) {
    this.url = (url || DEFAULT_URL).replace(/\/+$/, "");
    this.apiKey = apiKey || "";
    this.timeoutMs = timeoutMs;
    this.fetch = fetchImpl;
  }

  async request(method, path, body, extraHeaders = {}) {
    const headers = { accept: "application/json", ...extraHeaders };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (this.apiKey) headers.authorization = `Bearer ${this.apiKey}`;
    let response;
    try {
      response = await this.fetch(`${this.url}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (error) {
      const reason = error?.cause?.code || error?.name || String(error);
      return { ok: false, status: 0, code: "unreachable", message: `CLaaS at ${this.url} is unreachable (${reason})` };
    }
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = null;
    }
    if (response.ok) return { ok: true, status: response.status, body: parsed };
    const error = parsed?.error || {};
    return {
      ok: false,
      status: response.status,
      code: error.code || `http_${response.status}`,
      message: error.message || text.slice(0, 300) || `HTTP ${response.status}`,
    };
  }

  /** Queue feedback on one completion (does not wait for the update). */
  submitFeedback(completionId, feedback, idempotencyKey) {
    const headers = idempotencyKey ? { "idempotency-key": idempotencyKey } : {};
    return this.request("POST", "/v1/feedback", { completion_id: completionId, feedback, wait: false }, headers);
  }

  /** Queue several feedbacks as one update. */
  submitBatch(items) {
    return this.request("POST", "/v1/feedback", { items, wait: false });
  }

  job(jobId) {
    return this.request("GET", `/v1/feedback/${encodeURIComponent(jobId)}`);
  }

  jobs(adapterId, limit = 20) {
    const query = new URLSearchParams({ adapter_id: adapterId, limit: String(limit) });
    return this.request("GET", `/v1/feedback?${query}`);
  }

  completion(completionId) {
    return this.request("GET", `/v1/chat/completions/${encodeURIComponent(completionId)}`);
  }

  adapter(adapterId) {
    return this.request("GET", `/v1/adapters/${adapterPath(adapterId)}`);
  }

  versions(adapterId) {
    return this.request("GET", `/v1/adapters/${adapterPath(adapterId)}/versions`);
  }

  rollback(adapterId, version) {
    return this.request("POST", `/v1/adapters/${adapterPath(adapterId)}/rollback`, { version });
  }
}

function adapterPath(adapterId) {
  return String(adapterId).split("/").map(encodeURIComponent).join("/");
}
