// Open-loop load: a constant arrival rate regardless of how fast the server answers, so a slow
// server shows up as latency and dropped iterations instead of a quietly lower request rate.
import http from "k6/http";
import { check } from "k6";

const body = open(__ENV.BODY_FILE, "b");
const headers = { "Content-Type": __ENV.CONTENT_TYPE || "application/json" };
if (__ENV.HEADER_LEN) {
  headers["Inference-Header-Content-Length"] = __ENV.HEADER_LEN;
}

export const options = {
  discardResponseBodies: true,
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(99)", "max"],
  scenarios: {
    fixed_rate: {
      executor: "constant-arrival-rate",
      rate: Number(__ENV.RATE),
      timeUnit: "1s",
      duration: `${__ENV.DURATION}s`,
      preAllocatedVUs: Number(__ENV.VUS || 50),
      maxVUs: Number(__ENV.MAX_VUS || 200),
    },
  },
};

export default function () {
  const res = http.post(__ENV.URL, body, { headers });
  check(res, { "status 200": (r) => r.status === 200 });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data.metrics) };
}
