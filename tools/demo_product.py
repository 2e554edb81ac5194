"""Intent table of the demo model: how to use llamafoundry (serve, deploy, keys, SDK, streaming, limits...).

The answers follow what llamafoundry does: `llamafoundry serve` on port 8000 with a generated key, deployments
with primary and secondary keys at /deployments/NAME, the `azure-ai-inference` SDK, 200,000 tokens and 1,000
requests per minute for serverless deployments, 429 with Retry-After past the limit.
"""

from __future__ import annotations

from dataclasses import replace

from demo_topics import Intent


def _follow(name: str, questions: tuple[str, ...], answers: tuple[str, ...]) -> Intent:
    return Intent(name, "follow_up", questions, answers)


_ROTATE = _follow(
    "rotate_keys",
    (
        "How do I rotate them?",
        "And if a key leaks?",
        "Can I change my key?",
        "How do I get a new key?",
        "What if someone stole my key?",
        "How do I regenerate a key?",
    ),
    (
        "Run `llamafoundry deploy keys NAME --regenerate primary`. The old primary key stops working at once, "
        "while the secondary key keeps working, so you can move your clients over without downtime.",
        "Regenerate it with `llamafoundry deploy keys NAME --regenerate primary` or `--regenerate secondary`. "
        "The old key stops working immediately.",
    ),
)
_SDK_STREAM = _follow(
    "sdk_stream",
    (
        "And how do I stream with it?",
        "Can it stream?",
        "What about streaming?",
        "Can I get the answer as it is generated?",
        "How do I stream the output with the SDK?",
    ),
    (
        "Yes. Pass `stream=True` to `client.complete`, then loop over the response and print "
        "`update.choices[0].delta.content` for each update as it arrives.",
    ),
)
_ASYNC = _follow(
    "sdk_async",
    ("Is there an async client?", "Can I use asyncio?", "Does it work with async code?"),
    (
        "Yes. Import `ChatCompletionsClient` from `azure.ai.inference.aio` and `await client.complete(...)`. It "
        "needs the aiohttp package.",
    ),
)
_REAL_MODEL = _follow(
    "where_gguf",
    (
        "Where do I get a GGUF file?",
        "Where can I download a model?",
        "Which model should I use?",
        "Which Llama model do you recommend?",
    ),
    (
        "You can download Llama GGUF files from Hugging Face. Llama 3.2 3B Instruct in Q4_K_M is a good start on "
        "a laptop; Llama 3.1 8B Instruct is better if you have 8 GB of memory to spare.",
    ),
)
_PORT = _follow(
    "port",
    (
        "Can I change the port?",
        "How do I use another port?",
        "What if port 8000 is taken?",
        "Can other machines reach it?",
    ),
    (
        "Yes: `llamafoundry serve --port 9000` uses port 9000. By default it listens on 127.0.0.1; pass "
        "`--host 0.0.0.0` to accept connections from other machines.",
    ),
)
_LIMIT_CHANGE = _follow(
    "change_limits",
    ("Can I change the limits?", "How do I raise the limit?", "Can I set my own limits?"),
    (
        "Use `--tpm` for tokens per minute and `--rpm` for requests per minute, for example "
        "`llamafoundry deploy create NAME --model MODEL --tpm 50000 --rpm 100`.",
    ),
)

_PRODUCT = (
    Intent(
        "what_is",
        "product",
        (
            "What is llamafoundry?",
            "What does llamafoundry do?",
            "Tell me about llamafoundry.",
            "What is this project?",
            "Explain llamafoundry to me.",
            "What is llamafoundry for?",
            "Why would I use llamafoundry?",
            "What is this server?",
            "What is this software?",
            "Can you describe llamafoundry?",
            "llamafoundry?",
            "What's llamafoundry?",
        ),
        (
            "llamafoundry serves Meta Llama models on your own machine behind the Azure AI Model Inference API. You "
            "give it a GGUF file, it runs the model on your CPU with llama.cpp, and code written for Azure AI "
            "Foundry's Llama endpoints works unchanged.",
            "llamafoundry is a self-hosted server for Meta Llama models. It speaks the Azure AI Model Inference API, "
            "so you can use the Azure SDK against your own machine, with deployments, keys and rate limits.",
        ),
        (_REAL_MODEL,),
    ),
    Intent(
        "install",
        "product",
        (
            "How do I install llamafoundry?",
            "How do I set it up?",
            "How do I get started?",
            "What do I need to install?",
            "Installation steps?",
            "How do I install it?",
            "How do I get llamafoundry?",
            "Is there a pip package?",
            "Where do I start?",
        ),
        (
            "Install it with pip: `pip install llamafoundry`. Then run `llamafoundry serve` to start a server with "
            "me, the built-in demo model, and call it with the Azure AI Inference SDK.",
            "Run `pip install llamafoundry`, then `llamafoundry serve`. It starts in a few seconds and prints the "
            "endpoint, an API key and a Python example you can copy.",
        ),
    ),
    Intent(
        "serve",
        "product",
        (
            "How do I start the server?",
            "How do I run llamafoundry?",
            "How do I launch the server?",
            "How do I serve a model?",
            "What does llamafoundry serve do?",
            "How do I start llamafoundry?",
            "How do I run the server locally?",
            "What command starts the API?",
            "How do I start an endpoint?",
            "How do I run it on my computer?",
            "How do I bring up the server?",
            "Which command runs the server?",
        ),
        (
            "Run `llamafoundry serve`. It starts a server on http://127.0.0.1:8000 with the built-in demo model and "
            "prints an API key, the endpoint URL and a Python snippet you can copy.",
            "Use `llamafoundry serve`. Without options it serves me, the demo model, on port 8000, and prints a "
            "generated API key. Add `--model path/to/model.gguf` to serve a real Llama model.",
        ),
        (_PORT, _REAL_MODEL),
    ),
    Intent(
        "serve_real",
        "product",
        (
            "How do I serve a real Llama model?",
            "How do I use my own GGUF file?",
            "How do I run Llama 3 with it?",
            "Can I serve Llama 3.1 8B?",
            "How do I load a different model?",
            "How do I replace the demo model?",
            "How do I serve a bigger model?",
            "Can I use a model I downloaded?",
            "How do I run my own model?",
            "How do I swap in a real model?",
        ),
        (
            "Download a Llama GGUF file, for example Llama 3.2 3B Instruct in Q4_K_M, and run `llamafoundry serve "
            "--model path/to/model.gguf`. The API stays the same, so your client code does not change.",
            "Pass the file with `--model`: `llamafoundry serve --model Llama-3.1-8B-Instruct-Q4_K_M.gguf`. Any "
            "Llama GGUF works, and clients keep using the same endpoint and key.",
        ),
        (_REAL_MODEL, _PORT),
    ),
    Intent(
        "deploy",
        "product",
        (
            "How do I deploy a Llama model?",
            "How do I create a deployment?",
            "How do I deploy a model?",
            "How can I deploy Llama 3.1 8B?",
            "What is a deployment?",
            "How do I make a new deployment?",
            "How do deployments work?",
            "How do I deploy Llama with llamafoundry?",
            "How do I publish a model?",
            "Can I deploy several models?",
            "How do I list my deployments?",
            "How do I delete a deployment?",
        ),
        (
            "Create a deployment with `llamafoundry deploy create NAME --model Meta-Llama-3.1-8B-Instruct --type "
            "serverless --weights model.gguf`. It gets its own keys and its own endpoint at "
            "http://HOST:PORT/deployments/NAME. `llamafoundry deploy list` shows all of them.",
            "Use `llamafoundry deploy create` with a name, a catalog model and your GGUF weights. Each deployment "
            "has its own endpoint and keys, and `deploy list`, `deploy show` and `deploy delete` manage them.",
        ),
        (_ROTATE,),
    ),
    Intent(
        "deploy_types",
        "product",
        (
            "What is the difference between serverless and managed compute?",
            "What is a serverless deployment?",
            "What is managed compute?",
            "Which deployment type should I choose?",
            "What deployment types exist?",
            "Serverless or managed?",
            "How is serverless billed?",
            "What are the deployment options?",
        ),
        (
            "There are two kinds. A serverless deployment is billed per token, uses keys and has content safety "
            "turned on. A managed compute deployment runs the number of instances you choose, is billed by "
            "core-hours and also accepts Entra ID tokens.",
        ),
    ),
    Intent(
        "keys",
        "product",
        (
            "How do I get an API key?",
            "Where is my key?",
            "What is my API key?",
            "How does authentication work?",
            "How do I authenticate?",
            "Which header carries the key?",
            "How do I send my key?",
            "Do I need a key?",
            "How do keys work?",
            "I lost my API key.",
            "Where can I see the keys of a deployment?",
            "How do I pass the key?",
            "What is the api-key header?",
            "Where can I see my key?",
            "How do I find the key?",
            "Which key do I use?",
            "Where is the API key printed?",
            "Where do I get a key?",
        ),
        (
            "When you start `llamafoundry serve` without `--api-key`, it generates a key and prints it. Send it in "
            "the `api-key` header or as `Authorization: Bearer KEY`. Deployments have a primary and a secondary "
            "key: `llamafoundry deploy keys NAME` shows them.",
            "Every request needs a key in the `api-key` header, or `Authorization: Bearer KEY`. `llamafoundry serve` "
            "prints its key at start, and `llamafoundry deploy keys NAME` shows the keys of a deployment.",
        ),
        (_ROTATE,),
    ),
    Intent(
        "rotate",
        "product",
        _ROTATE.questions[2:]
        + ("How do I rotate my keys?", "How do I rotate a key?", "How do I regenerate my API key?"),
        _ROTATE.answers,
    ),
    Intent(
        "sdk",
        "product",
        (
            "How do I use the Python SDK?",
            "How do I call the API from Python?",
            "Which SDK should I use?",
            "Show me a Python example.",
            "How do I connect with Python?",
            "Can I use the Azure SDK?",
            "How do I send a chat request in Python?",
            "Give me some Python code to call the model.",
            "How do I use azure-ai-inference?",
            "How do I write a client?",
            "How do I talk to the server from code?",
        ),
        (
            "Install the SDK with `pip install azure-ai-inference`. Then create a client with "
            '`ChatCompletionsClient(endpoint="http://127.0.0.1:8000", credential=AzureKeyCredential(key))` and '
            'call `client.complete(messages=[UserMessage("Hello!")])`. The answer is in '
            "`response.choices[0].message.content`.",
            "Use the Azure AI Inference SDK: `pip install azure-ai-inference`. Create a `ChatCompletionsClient` with "
            "your endpoint and an `AzureKeyCredential`, then call `client.complete` with a list of messages.",
        ),
        (_SDK_STREAM, _ASYNC),
    ),
    Intent(
        "stream",
        "product",
        (
            "How do I stream?",
            "How does streaming work?",
            "Can I stream the answer?",
            "How do I get streaming output?",
            "Does llamafoundry support streaming?",
            "How do I receive tokens as they are generated?",
            "How do I stream responses?",
            "How do I enable streaming?",
            "How do I get the answer word by word?",
            "Is streaming supported?",
            "How do I stream with curl?",
            "What is stream=True?",
        ),
        (
            "Pass `stream=True` to `client.complete`. Then loop over the response and print "
            '`update.choices[0].delta.content` as each update arrives. Over plain HTTP, send "stream": true and '
            "read the server-sent events until `data: [DONE]`.",
            'Set `stream=True` in the SDK, or "stream": true in the JSON body. The server '
            "sends server-sent events, one piece of the answer at a time, and ends with `data: [DONE]`.",
        ),
    ),
    Intent(
        "rate_limits",
        "product",
        (
            "What are the rate limits?",
            "Is there a rate limit?",
            "How many requests can I send?",
            "What does error 429 mean?",
            "Why do I get a 429?",
            "How many tokens per minute can I use?",
            "What happens when I hit the limit?",
            "Are there any limits?",
            "What is Retry-After?",
            "How fast can I call the API?",
            "I got a rate limit error.",
            "What are the default limits?",
            "What happens when I go over the limit?",
            "What if I send a lot of requests?",
            "Why am I being throttled?",
            "Too many requests error?",
            "What happens if I exceed the rate limit?",
            "Is there a request limit?",
        ),
        (
            "A serverless deployment allows 200,000 tokens and 1,000 requests per minute by default. A request over "
            "the limit gets a 429 error with a Retry-After header that says how many seconds to wait; the SDK waits "
            "and retries for you.",
            "Each deployment has a tokens per minute and a requests per minute limit, 200,000 and 1,000 for "
            "serverless. Past the limit you get a 429 answer with Retry-After, so wait that many seconds and retry.",
        ),
        (_LIMIT_CHANGE,),
    ),
    Intent(
        "port",
        "product",
        _PORT.questions[:3] + ("How do I change the port?", "How do I listen on another address?"),
        _PORT.answers,
    ),
    Intent(
        "change_limits",
        "product",
        _LIMIT_CHANGE.questions + ("How do I set a rate limit?", "How do I configure the limits?"),
        _LIMIT_CHANGE.answers,
    ),
    Intent(
        "usage",
        "product",
        (
            "How do I see my usage?",
            "How much did I spend?",
            "How do I check token usage?",
            "How much does it cost?",
            "Can I see the cost?",
            "How is usage metered?",
            "Where do I see how many tokens I used?",
            "How do I export usage?",
            "Is there billing?",
        ),
        (
            "Run `llamafoundry usage` to see requests, tokens, errors, latency and cost per deployment. Add `--by "
            "day` to group the numbers by day, or `--format csv` to export them.",
        ),
    ),
    Intent(
        "models",
        "product",
        (
            "Which models are available?",
            "Which models can I use?",
            "What is in the model catalog?",
            "Does it support Llama 3.2?",
            "How do I list models?",
            "Which Llama models are supported?",
            "Can I use Llama 3.1 405B?",
            "What models do you support?",
            "Show me the catalog.",
        ),
        (
            "Run `llamafoundry models list` to see the catalog: Llama 3.2 1B and 3B, Meta-Llama-3.1 8B, 70B and "
            "405B, their Instruct versions, and Llama Guard 3. `llamafoundry models show NAME` gives the details.",
        ),
    ),
    Intent(
        "openai",
        "product",
        (
            "Can I use the OpenAI client?",
            "Does it work with the openai package?",
            "Is it OpenAI compatible?",
            "Can I use OpenAI's SDK?",
            "Is there a /v1 endpoint?",
        ),
        (
            'Yes. Point the OpenAI client at the /v1 path: `OpenAI(base_url="http://127.0.0.1:8000/v1", '
            "api_key=key)`, then call `client.chat.completions.create` as usual.",
        ),
    ),
    Intent(
        "curl",
        "product",
        (
            "How do I call it with curl?",
            "Can I use plain HTTP?",
            "What is the REST endpoint?",
            "Which URL do I call?",
            "What is the endpoint URL?",
            "How do I send a request without the SDK?",
        ),
        (
            "Send a POST request to /chat/completions with your key in the `api-key` header and a JSON body with "
            'your messages, for example `{"messages": [{"role": "user", "content": "Hi"}]}`.',
            "The chat endpoint is POST http://127.0.0.1:8000/chat/completions. Send the key in the `api-key` header "
            "and the messages in the JSON body.",
        ),
    ),
    Intent(
        "parameters",
        "product",
        (
            "Which parameters can I set?",
            "What does temperature do?",
            "How do I make the answer shorter?",
            "What is max_tokens?",
            "How do I get the same answer every time?",
            "What options does a request take?",
            "What is top_p?",
            "How do I control randomness?",
        ),
        (
            "You can set `temperature`, `top_p`, `max_tokens`, `stop`, `presence_penalty`, `frequency_penalty` "
            "and `seed` on each request. A lower temperature gives more focused answers, `max_tokens` caps the "
            "length, and a fixed `seed` repeats the same answer.",
        ),
    ),
    Intent(
        "info",
        "product",
        (
            "How do I see which model is served?",
            "What does /info return?",
            "How do I check the model name?",
            "Which model is running?",
            "How do I get model info?",
        ),
        (
            "Call GET /info, or `client.get_model_info()` in the SDK. It returns the model name, the model type "
            "and the provider. For me it says llamafoundry-demo from llamafoundry.",
        ),
    ),
    Intent(
        "safety",
        "product",
        (
            "Is there content filtering?",
            "What is content safety?",
            "Does llamafoundry filter answers?",
            "What does content_filter mean?",
            "Is content safety on?",
        ),
        (
            "Serverless deployments check prompts and answers with content safety by default. When an answer is "
            "filtered, its finish reason is content_filter.",
        ),
    ),
    Intent(
        "auth_error",
        "product",
        (
            "Why do I get a 401 error?",
            "What does 401 mean?",
            "It says auth token validation failed.",
            "My key does not work.",
            "I get an authentication error.",
            "Why is my request unauthorized?",
        ),
        (
            "A 401 error means the key is missing or wrong. Check that you send it in the `api-key` header or as "
            "`Authorization: Bearer KEY`, and that it belongs to the deployment you call.",
        ),
    ),
    Intent(
        "performance",
        "product",
        (
            "How do I make it faster?",
            "How many threads does it use?",
            "What is --parallel?",
            "What is --ctx-size?",
            "Can several users call it at once?",
            "Does it batch requests?",
            "How do I tune performance?",
        ),
        (
            "Use `--threads` for CPU threads, `--parallel` for how many requests decode together, and `--ctx-size` "
            "for the context of one request. Requests are batched continuously, so many clients can share one "
            "model.",
        ),
    ),
    Intent(
        "license",
        "product",
        (
            "Is llamafoundry free?",
            "How much does llamafoundry cost?",
            "What is the license of llamafoundry?",
            "Is it open source?",
            "Can I use llamafoundry commercially?",
            "Do I have to pay for it?",
        ),
        (
            "llamafoundry is free and open source under the Apache 2.0 license. The Llama models you serve come "
            "with Meta's own license, so check it before you use them in a product.",
        ),
    ),
    Intent(
        "hardware",
        "product",
        (
            "Do I need a GPU?",
            "Does it run on a laptop?",
            "What hardware do I need?",
            "Does it run on CPU?",
            "How much memory do I need?",
            "Will it work on my Mac?",
        ),
        (
            "No GPU needed: llamafoundry runs models on the CPU with llama.cpp. Small models such as Llama 3.2 1B or "
            "3B run well on a laptop; bigger models need more memory.",
        ),
    ),
)

# Verb phrases and noun phrases of each intent for the generator's generic frames ("How can I {task}?",
# "Tell me about {topic}."): the same frames carry every intent, so only these words tell intents apart.
_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "what_is": ((), ("llamafoundry", "this project", "the llamafoundry server", "what llamafoundry is")),
    "install": (
        ("install llamafoundry", "set up llamafoundry", "get started with llamafoundry", "install the package"),
        ("installing llamafoundry", "the installation", "getting started", "setup"),
    ),
    "serve": (
        (
            "start the server",
            "run llamafoundry",
            "launch llamafoundry",
            "start llamafoundry",
            "run the server",
            "start serving",
            "run llamafoundry serve",
            "get a local endpoint",
            "start the API server",
        ),
        ("starting the server", "llamafoundry serve", "the serve command", "running the server"),
    ),
    "serve_real": (
        (
            "serve my own model",
            "use a real Llama model",
            "load a GGUF file",
            "serve Llama 3.1 8B",
            "run a bigger model",
            "switch to a real model",
            "serve a GGUF",
        ),
        ("serving my own GGUF", "real Llama models", "using my own model", "the --model option"),
    ),
    "deploy": (
        (
            "deploy a model",
            "create a deployment",
            "deploy Llama",
            "set up a deployment",
            "deploy Llama 3.2",
            "add a deployment",
            "remove a deployment",
            "list my deployments",
        ),
        ("deployments", "deploying models", "deploy create", "creating a deployment"),
    ),
    "deploy_types": ((), ("deployment types", "serverless deployments", "managed compute", "serverless vs managed")),
    "keys": (
        (
            "get an API key",
            "find my key",
            "see my keys",
            "authenticate",
            "send my key",
            "get a key",
            "pass the API key",
            "find the API key",
        ),
        ("API keys", "authentication", "the api-key header", "keys", "my key", "auth"),
    ),
    "rotate": (
        ("rotate my keys", "regenerate a key", "replace a leaked key", "change my API key", "reset my key"),
        ("key rotation", "regenerating keys", "a leaked key"),
    ),
    "sdk": (
        (
            "call the API from Python",
            "use the Python SDK",
            "connect from Python",
            "write a Python client",
            "send a request from Python",
            "use azure-ai-inference",
            "call the model from code",
        ),
        ("the Python SDK", "the Azure SDK", "azure-ai-inference", "Python clients", "the client library"),
    ),
    "stream": (
        (
            "stream the answer",
            "stream responses",
            "get streaming output",
            "stream tokens",
            "stream the output",
            "receive the answer as it is written",
            "turn on streaming",
            "use streaming",
        ),
        ("streaming", "server-sent events", "stream=True", "streamed responses", "token streaming"),
    ),
    "rate_limits": (
        ("avoid 429 errors", "stay under the rate limit", "handle rate limits", "send many requests"),
        (
            "rate limits",
            "the request limit",
            "429 errors",
            "throttling",
            "quotas",
            "tokens per minute",
            "requests per minute",
            "Retry-After",
            "the limits",
        ),
    ),
    "port": (
        ("change the port", "use port 9000", "listen on all interfaces", "expose the server to my network"),
        ("the port", "the --port option", "the --host option", "network access"),
    ),
    "change_limits": (
        ("change the rate limit", "raise my limits", "set a tokens per minute limit", "configure rate limits"),
        ("custom rate limits", "the --tpm option", "the --rpm option"),
    ),
    "usage": (
        ("check my usage", "see my costs", "track token usage", "export usage data", "see how much I spent"),
        ("usage", "costs", "billing", "token usage", "metering", "the usage report"),
    ),
    "models": (
        ("list the models", "see the catalog", "find a model", "pick a Llama model"),
        ("the model catalog", "supported models", "available models", "Llama 3.2 support"),
    ),
    "openai": (("use the OpenAI client", "use the openai package"), ("OpenAI compatibility", "the /v1 endpoint")),
    "curl": (
        ("call the API with curl", "send a raw HTTP request", "call the REST API"),
        ("curl", "the REST API", "the endpoint URL", "plain HTTP"),
    ),
    "parameters": (
        ("set the temperature", "limit the answer length", "get repeatable answers", "control randomness"),
        ("temperature", "max_tokens", "sampling parameters", "top_p", "the seed parameter"),
    ),
    "info": (("check which model is served", "get model info"), ("the /info endpoint", "model info")),
    "safety": (("turn on content safety", "filter answers"), ("content safety", "content filtering")),
    "auth_error": (("fix a 401 error", "fix an authentication error"), ("401 errors", "auth errors")),
    "performance": (
        ("make it faster", "tune performance", "use more threads", "serve many users at once"),
        ("performance", "threads", "batching", "the --parallel option", "the context size"),
    ),
    "hardware": (
        ("run it on a laptop", "run it without a GPU", "run it on my Mac"),
        ("hardware requirements", "GPUs", "memory requirements", "CPU support"),
    ),
    "license": ((), ("the license", "pricing of llamafoundry", "open source")),
}

PRODUCT = tuple(replace(i, tasks=_PHRASES[i.name][0], topics=_PHRASES[i.name][1]) for i in _PRODUCT)
