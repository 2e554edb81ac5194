// Content filtering seen through the Azure AI Inference JS SDK, the way its samples call it: a harmful prompt
// (plain and streaming) and a benign streamed prompt whose events carry the filter's annotations.
// Usage: LF_ENDPOINT=http://127.0.0.1:8000 LF_KEY=... LF_HARMFUL="..." node content_filter.mjs
import ModelClient, { isUnexpected } from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";
import { createSseStream } from "@azure/core-sse";

const options = { retryOptions: { maxRetries: 0 }, allowInsecureConnection: true };
const client = ModelClient(process.env.LF_ENDPOINT, new AzureKeyCredential(process.env.LF_KEY), options);
const harmful = [{ role: "user", content: process.env.LF_HARMFUL }];
const benign = [{ role: "user", content: "How many feet are in a mile?" }];

async function blocked(stream) {
  const response = await client.path("/chat/completions").post({ body: { messages: harmful, max_tokens: 5, stream } });
  return { status: response.status, unexpected: isUnexpected(response), body: response.body };
}

async function streamed() {
  const response = await client
    .path("/chat/completions")
    .post({ body: { messages: benign, max_tokens: 5, stream: true } })
    .asNodeStream();
  const chunks = [];
  for await (const event of createSseStream(response.body)) {
    if (event.data === "[DONE]") break;
    const chunk = JSON.parse(event.data);
    for (const choice of chunk.choices) void choice.delta?.content; // what the sample does with each event
    chunks.push(chunk);
  }
  return { status: response.status, chunks };
}

console.log(JSON.stringify({ blocked: await blocked(false), blockedStream: await blocked(true), stream: await streamed() }));
