// The Azure AI Inference JS SDK's own sample (samples-dev/chatCompletions.ts), unchanged but for reading the
// endpoint and key from the environment: no `allowInsecureConnection`, so the SDK needs an https:// endpoint
// whose certificate Node trusts (`serve --tls auto` and NODE_EXTRA_CA_CERTS=<data dir>/tls/ca.pem).
import ModelClient, { isUnexpected } from "@azure-rest/ai-inference";
import { AzureKeyCredential } from "@azure/core-auth";

const endpoint = process.env["AZURE_AI_CHAT_ENDPOINT"];
const key = process.env["AZURE_AI_CHAT_KEY"];

export async function main() {
  const client = ModelClient(endpoint, new AzureKeyCredential(key));
  const response = await client.path("/chat/completions").post({
    body: {
      messages: [{ role: "user", content: "How many feet are in a mile?" }],
      max_tokens: 8,
    },
  });
  if (isUnexpected(response)) {
    throw response.body.error;
  }
  for (const choice of response.body.choices) {
    console.log(JSON.stringify({ content: choice.message.content, finish_reason: choice.finish_reason }));
  }
}

main().catch((err) => {
  console.error("The sample encountered an error:", err);
  process.exit(1);
});
