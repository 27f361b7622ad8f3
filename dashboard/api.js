// The dashboard's only ways out: the JSON API (Envoy transcodes it to the orchestrator's gRPC
// service) and Prometheus's query API, both on this page's own origin. Every failure becomes an
// ApiError whose `message` is written for the person looking at the page.

export class ApiError extends Error {
  /**
   * @param {string} kind  "network" | "auth" | "not-found" | "unavailable" | "invalid" | "other"
   * @param {string} message  what to show
   * @param {number} status  HTTP status, 0 when no answer came back
   */
  constructor(kind, message, status) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

const NETWORK_MESSAGE =
  "The API is not reachable: nothing answered at " +
  window.location.origin +
  ". Is the mesh running (make up)?";

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function serverMessage(body) {
  if (body && typeof body === "object" && typeof body.message === "string") return body.message;
  if (typeof body === "string") return body.trim();
  return "";
}

function errorFor(response, body) {
  const said = serverMessage(body);
  const status = response.status;
  if (status === 401) {
    return new ApiError(
      "auth",
      "That API key was not accepted: it is unknown, revoked or mistyped.",
      status,
    );
  }
  if (status === 404) return new ApiError("not-found", said || "Not found.", status);
  if (status === 502 || status === 503 || status === 504) {
    return new ApiError(
      "unavailable",
      "The API is unavailable (HTTP " + status + ")" + (said ? ": " + said : "."),
      status,
    );
  }
  if (status === 400 || status === 409) {
    return new ApiError("invalid", said || "The request was refused (HTTP " + status + ").", status);
  }
  return new ApiError("other", "The API answered HTTP " + status + (said ? ": " + said : "."), status);
}

/** A client for one tenant, signed in with one of its API keys. */
export class Api {
  constructor(tenant, key) {
    this.tenant = tenant;
    this.key = key;
  }

  async request(method, path, { query, body } = {}) {
    const url = new URL(
      "/v1/tenants/" + encodeURIComponent(this.tenant) + path,
      window.location.origin,
    );
    // Percent-encoded by hand: URLSearchParams writes a space as "+", which the transcoder
    // keeps as a plus ("create_time+desc" is refused).
    url.search = (query || [])
      .map(([name, value]) => encodeURIComponent(name) + "=" + encodeURIComponent(value))
      .join("&");
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: {
          authorization: "Bearer " + this.key,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError("network", NETWORK_MESSAGE, 0);
    }
    const parsed = await readBody(response);
    if (!response.ok) throw errorFor(response, parsed);
    return parsed;
  }

  /** One page of calls: {serviceCalls, nextPageToken}. `filter` as built by the page. */
  list(filter, pageSize, pageToken) {
    const query = [
      ["pageSize", String(pageSize)],
      ["orderBy", "create_time desc"],
    ];
    if (pageToken) query.push(["pageToken", pageToken]);
    for (const state of filter.states) query.push(["states", state]);
    for (const tag of filter.tags) query.push(["tags", tag]);
    if (filter.createdFrom) query.push(["createTimeStart", filter.createdFrom.toISOString()]);
    if (filter.createdBefore) query.push(["createTimeEnd", filter.createdBefore.toISOString()]);
    return this.request("GET", "/service-calls", { query });
  }

  get(id) {
    return this.request("GET", "/service-calls/" + encodeURIComponent(id), {
      query: [["view", "FULL"]],
    });
  }

  cancel(id, reason) {
    return this.request("POST", "/service-calls/" + encodeURIComponent(id) + ":cancel", {
      body: { reason },
    });
  }
}

/**
 * One instant query to Prometheus through Envoy's /prometheus route. Returns the vector's
 * samples as [{labels, value}] (value a number; NaN when Prometheus says so).
 * Throws ApiError "unavailable" when the mesh has no Prometheus or it does not answer.
 */
export async function prometheusQuery(expression) {
  const url = new URL("/prometheus/api/v1/query", window.location.origin);
  url.searchParams.set("query", expression);
  let response;
  try {
    response = await fetch(url, { cache: "no-store" });
  } catch {
    throw new ApiError("network", NETWORK_MESSAGE, 0);
  }
  const body = await readBody(response);
  if (response.status === 404) {
    throw new ApiError(
      "unavailable",
      "Metrics unavailable: this mesh runs no Prometheus (Envoy has no /prometheus route).",
      404,
    );
  }
  if (!response.ok) {
    // Envoy's own text for a refused connection says nothing a person needs; Prometheus's
    // error (a bad query) does.
    const said = (body && body.error) || "";
    throw new ApiError(
      "unavailable",
      "Metrics unavailable: Prometheus is not answering (HTTP " +
        response.status +
        ")" +
        (said ? ": " + said : "."),
      response.status,
    );
  }
  if (!body || body.status !== "success" || !body.data || !Array.isArray(body.data.result)) {
    throw new ApiError("unavailable", "Metrics unavailable: Prometheus gave no usable answer.", 200);
  }
  return body.data.result.map((sample) => ({
    labels: sample.metric || {},
    value: Number(sample.value ? sample.value[1] : NaN),
  }));
}
