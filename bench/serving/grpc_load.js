// Closed-loop gRPC load: VUS virtual users, each on its own connection, calling ModelInfer with
// the input as raw_input_contents (as Triton's clients send it) back to back for DURATION s.
import grpc from "k6/net/grpc";
import encoding from "k6/encoding";
import { check } from "k6";

const client = new grpc.Client();
client.load([__ENV.PROTO_DIR], "grpc_predict_v2.proto");
const raw = encoding.b64encode(open(__ENV.RAW_FILE, "b"));
const request = {
  model_name: __ENV.MODEL,
  inputs: [{ name: __ENV.INPUT, datatype: "FP32", shape: JSON.parse(__ENV.SHAPE) }],
  raw_input_contents: [raw],
};

export const options = {
  summaryTrendStats: ["avg", "min", "med", "p(90)", "p(99)", "max"],
  scenarios: {
    closed_loop: {
      executor: "constant-vus",
      vus: Number(__ENV.VUS),
      duration: `${__ENV.DURATION}s`,
    },
  },
};

export default function () {
  if (__ITER === 0) {
    client.connect(__ENV.TARGET, { plaintext: true });
  }
  const res = client.invoke("inference.GRPCInferenceService/ModelInfer", request);
  check(res, { "status OK": (r) => r && r.status === grpc.StatusOK });
}

export function handleSummary(data) {
  return { [__ENV.OUT]: JSON.stringify(data.metrics) };
}
