// Drives a llamafoundry server with the Azure AI Inference JS SDK, the way its samples do
// (samples-dev/chatCompletions.ts, streamChatCompletions.ts), and prints one JSON summary line.
// Usage: LF_ENDPOINT=http://127.0.0.1:8000 LF_KEY=... node chat.mjs
// Over plain http the JS SDK sends a key only with `allowInsecureConnection: true`.
import ModelClient, { isUnexpected } from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";
import { createSseStream } from "@azure/core-sse";

const endpoint = process.env.LF_ENDPOINT;
const key = process.env.LF_KEY;
const messages = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "How many feet are in a mile?" },
];

const options = { retryOptions: { maxRetries: 0 }, allowInsecureConnection: true };

async function complete(client) {
  const response = await client.path("/chat/completions").post({ body: { messages, max_tokens: 5 } });
  if (isUnexpected(response)) throw new Error(`complete: ${response.status} ${JSON.stringify(response.body)}`);
  return { status: response.status, headers: { requestId: response.headers["x-request-id"] }, body: response.body };
}

async function stream(client) {
  const response = await client
    .path("/chat/completions")
    .post({ body: { messages, max_tokens: 5, stream: true } })
    .asNodeStream();
  if (!response.body) throw new Error("stream: the response stream is undefined");
  if (response.status !== "200") {
    response.body.destroy();
    throw new Error(`stream: failed with status ${response.status}`);
  }
  const events = [];
  let sawDone = false;
  for await (const event of createSseStream(response.body)) {
    if (event.data === "[DONE]") {
      sawDone = true;
      break;
    }
    const chunk = JSON.parse(event.data);
    for (const choice of chunk.choices) void choice.delta?.content; // what the sample does with each event
    events.push({ event: event.event ?? null, id: event.id ?? null, chunk });
  }
  return { contentType: response.headers["content-type"], sawDone, events };
}

async function info(client) {
  const response = await client.path("/info").get();
  if (isUnexpected(response)) throw new Error(`info: ${response.status}`);
  return response.body;
}

async function wrongKey() {
  const client = ModelClient(endpoint, new AzureKeyCredential("wrong-key"), options);
  const response = await client.path("/chat/completions").post({ body: { messages } });
  return { status: response.status, unexpected: isUnexpected(response), body: response.body };
}

async function badRequest(client) {
  const response = await client.path("/chat/completions").post({ body: { messages, temperature: 9 } });
  return { status: response.status, unexpected: isUnexpected(response), body: response.body };
}

const client = ModelClient(endpoint, new AzureKeyCredential(key), options);
const summary = {
  complete: await complete(client),
  stream: await stream(client),
  info: await info(client),
  wrongKey: await wrongKey(),
  badRequest: await badRequest(client),
};
console.log(JSON.stringify(summary));
