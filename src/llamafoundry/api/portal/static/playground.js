// The playground: a browser client of the inference API. It posts to the deployment's real chat route with an
// api-key and reads the server-sent events the SDKs read (data: {chunk} ... data: [DONE]).
"use strict";

const $ = (id) => document.getElementById(id);
const targets = JSON.parse($("playground-targets").textContent);
const history = [];
let controller = null;

function target() {
  return targets.find((t) => t.name === $("pg-target").value) || targets[0];
}

function requestBody(messages) {
  const body = { messages, stream: true };
  const number = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  const params = { temperature: number("pg-temperature"), top_p: number("pg-top-p"),
    max_tokens: number("pg-max-tokens"), seed: number("pg-seed") };
  Object.entries(params).forEach(([name, value]) => { if (value !== null) body[name] = value; });
  const stops = $("pg-stop").value.split("\n").filter((s) => s !== "");
  if (stops.length) body.stop = stops;
  if ($("pg-json").checked) body.response_format = { type: "json_object" };
  return body;
}

function conversation(userText) {
  const messages = [];
  const system = $("pg-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  return messages.concat(history, userText === null ? [] : [{ role: "user", content: userText }]);
}

function addMessage(role, text) {
  const item = document.createElement("div");
  item.className = `msg msg-${role}`;
  const who = document.createElement("span");
  who.className = "role";
  who.textContent = role === "user" ? "You" : role === "assistant" ? "Assistant" : "Error";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  $("chat-log").append(item);
  $("chat-log").scrollTop = $("chat-log").scrollHeight;
  return body;
}

function setStat(name, value) {
  document.querySelector(`[data-stat="${name}"]`).textContent = value;
}

function showFilter(prompt, completion) {
  const box = $("pg-filter");
  box.replaceChildren();
  const sections = [["Prompt", prompt], ["Completion", completion]];
  sections.forEach(([label, results]) => {
    if (!results) return;
    const heading = document.createElement("h4");
    heading.textContent = label;
    const list = document.createElement("ul");
    Object.entries(results).forEach(([category, verdict]) => {
      const item = document.createElement("li");
      let text = `${category.replace("_", " ")}: `;
      if (Array.isArray(verdict)) text += verdict.length ? verdict.map((b) => `${b.id}${b.filtered ? " (filtered)" : ""}`).join(", ") : "none";
      else if ("detected" in verdict) text += verdict.detected ? "detected" : "not detected";
      else text += verdict.severity || (verdict.filtered ? "filtered" : "n/a");
      if (verdict.filtered) { text += ", filtered"; item.className = "filtered"; }
      item.textContent = text;
      list.append(item);
    });
    box.append(heading, list);
  });
  if (!box.childElementCount) box.textContent = "No content-filter results (content safety is off for this deployment).";
}

function showError(message) {
  $("pg-error").textContent = message;
  $("pg-error").hidden = false;
}

function updateCode() {
  const t = target();
  const base = document.querySelector(".playground").dataset.baseUrl;
  const body = requestBody(conversation($("pg-message").value || "Hello!"));
  $("pg-code-curl").textContent = `curl "${base}${t.url}?api-version=2024-05-01-preview" \\\n` +
    `  -H "api-key: $AZURE_INFERENCE_CREDENTIAL" -H "Content-Type: application/json" \\\n` +
    `  -d '${JSON.stringify(body, null, 2).replace(/'/g, "'\\''")}'`;
  const args = Object.entries(body).filter(([k]) => k !== "messages")
    .map(([k, v]) => `    ${k}=${k === "response_format" ? '"json_object"' : JSON.stringify(v).replace(/\btrue\b/g, "True")},`);
  const messages = body.messages.map((m) => `        {"role": ${JSON.stringify(m.role)}, "content": ${JSON.stringify(m.content)}},`);
  $("pg-code-python").textContent = [
    "import os", "", "from azure.ai.inference import ChatCompletionsClient",
    "from azure.core.credentials import AzureKeyCredential", "",
    `client = ChatCompletionsClient("${base}${t.endpoint}", AzureKeyCredential(os.environ["AZURE_INFERENCE_CREDENTIAL"]))`,
    "response = client.complete(", "    messages=[", ...messages, "    ],", ...args, ")",
    "for update in response:", "    if update.choices:",
    '        print(update.choices[0].delta.content or "", end="", flush=True)',
  ].join("\n");
}

async function readEvents(response, onChunk) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return false;
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return true;
      if (data) onChunk(JSON.parse(data));
    }
  }
}

async function send(userText) {
  const t = target();
  const messages = conversation(userText);
  $("pg-error").hidden = true;
  addMessage("user", userText);
  const output = addMessage("assistant", "");
  output.parentElement.setAttribute("aria-busy", "true");
  ["prompt_tokens", "completion_tokens", "total_tokens", "ttft", "tps", "finish_reason"].forEach((s) => setStat(s, "…"));
  controller = new AbortController();
  $("pg-send").disabled = true;
  $("pg-stop-button").disabled = false;
  const started = performance.now();
  let firstAt = null, usage = null, finish = null, promptFilter = null, completionFilter = null, text = "";
  try {
    const response = await fetch(t.url, { method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json", "api-key": $("pg-key").value.trim() },
      body: JSON.stringify(requestBody(messages)) });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const error = body.error || body;
      const inner = error.innererror && error.innererror.content_filter_result;
      if (inner) showFilter(inner, null);
      throw new Error(`${response.status}: ${error.message || response.statusText}`);
    }
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(`${chunk.error.status || ""} ${chunk.error.message}`);
      if (chunk.prompt_filter_results) promptFilter = chunk.prompt_filter_results[0].content_filter_results;
      const choice = (chunk.choices || [])[0];
      if (choice && choice.delta && choice.delta.content) {
        if (firstAt === null) firstAt = performance.now();
        text += choice.delta.content;
        output.textContent = text;
      }
      if (choice && choice.finish_reason) finish = choice.finish_reason;
      if (choice && choice.content_filter_results) completionFilter = choice.content_filter_results;
      if (chunk.usage) usage = chunk.usage;
    });
    history.push({ role: "user", content: userText }, { role: "assistant", content: text });
  } catch (error) {
    if (error.name !== "AbortError") showError(error.message);
    if (!text) output.parentElement.remove();
  } finally {
    const ended = performance.now();
    output.parentElement.removeAttribute("aria-busy");
    if (usage) ["prompt_tokens", "completion_tokens", "total_tokens"].forEach((s) => setStat(s, usage[s]));
    setStat("ttft", firstAt === null ? "–" : `${Math.round(firstAt - started)} ms`);
    const decoded = usage ? usage.completion_tokens - 1 : 0;
    setStat("tps", firstAt !== null && decoded > 0 && ended > firstAt ? (decoded / ((ended - firstAt) / 1000)).toFixed(1) : "–");
    setStat("finish_reason", finish || "–");
    if (promptFilter || completionFilter) showFilter(promptFilter, completionFilter);
    $("pg-send").disabled = false;
    $("pg-stop-button").disabled = true;
    controller = null;
  }
}

function chooseTarget() {
  $("pg-key").value = target() ? target().key : "";
  updateCode();
}

document.addEventListener("DOMContentLoaded", () => {
  if (!targets.length) {
    $("pg-send").disabled = true;
    return;
  }
  $("pg-target").addEventListener("change", chooseTarget);
  chooseTarget();
  $("chat-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("pg-message").value.trim();
    if (!text || controller) return;
    $("pg-message").value = "";
    send(text);
  });
  $("pg-message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("chat-form").requestSubmit();
  });
  $("pg-stop-button").addEventListener("click", () => controller && controller.abort());
  $("pg-clear").addEventListener("click", () => { history.length = 0; $("chat-log").replaceChildren(); });
  document.querySelectorAll(".setup input, .setup textarea, .setup select, #pg-message")
    .forEach((el) => el.addEventListener("input", updateCode));
});
