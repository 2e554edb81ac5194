"""Ordinary traffic for the safety training corpus: everyday chat, assistant answers, short inputs, and noise.

Why this exists: the first corpus taught benign text mostly through trigger words used in harmless senses
("kill the process"). Common words that only the harmful classes happened to use ("something", "sleep",
"people", "make", "goodbye", "no") became evidence of harm, so "Say something." scored sexual/medium and
random-weight models' token salad was held back. These classes give the model what ordinary traffic looks like:

- `benign_chat`: what users ask an assistant (questions, coding, math, writing, business email, serving Llama
  models), through the shared frames of safety_corpus.py plus chat frames of its own.
- `benign_question`: questions about the world by question word ("How many bones ...?", "Why do cats ...?").
- `benign_answer`: what an assistant answers (explanations, code, emails, steps, pleasantries).
- `benign_short`: very short inputs ("ok", "go on", a single word, a bare question word, punctuation).
- `benign_words`: common English words (from the Llama 3 vocabulary, without harm words) in neutral frames; 60%
  of them are bridge words (`bridge_words`): words the harmful classes use that carry no harm alone.
- `benign_refusal`: an assistant's refusals, which name what they refuse.
- noise (`noise_examples`): token salad of Llama 3 vocabulary pieces, code fragments and multilingual pieces, as
  random-weight or broken models write it.

Everything is generated from slots and templates written for this file (not from the evaluation sets; the corpus
generator drops near copies of evaluation texts anyway). Noise and vocabulary words never contain words from
`HARM_EXACT`/`HARM_PREFIXES`, so salad labelled safe does not teach that harm words are harmless.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "src" / "llamafoundry" / "model" / "data" / "llama3-tokenizer.gguf"
NUM_VOCAB_IDS = 128000  # below the special tokens

# Words that carry harm (or sexual content) on their own: never used as filler in noise or vocabulary frames.
HARM_PREFIXES = (
    "kill", "murder", "rape", "rapist", "sex", "porn", "nude", "naked", "erotic", "fuck", "cock", "puss", "blowjob",
    "orgasm", "horny", "slut", "whore", "boob", "penis", "vagin", "genital", "nipple", "suicid", "dying", "death",
    "bomb", "explos", "terror", "shoot", "stab", "weapon", "poison", "massacr", "genocid", "extermin", "slaughter",
    "behead", "tortur", "noose", "overdos", "blood", "bleed", "wound", "corpse", "knife", "knives", "nazi", "hitler",
    "jihad", "nigg", "fag", "retard", "kike", "chink", "tranny", "cunt", "bitch", "bastard", "hate", "hatred",
    "racis", "vermin", "subhuman", "parasit", "cockroach", "slave", "lynch", "strangl", "chok", "suffocat", "drown",
    "abus", "assault", "violen", "attack", "threat", "kidnap", "hostage", "underage", "pedo", "incest", "fetish",
    "breast", "thigh", "panties", "lingerie", "lust", "seduc", "razor", "starv", "anorex", "bulim", "skinny",
    "sarin", "anthrax", "ricin", "cyanide", "cocaine", "heroin", "gun", "rifle", "pistol", "ammo", "grenade",
    "militia", "deport", "immigra", "refugee", "muslim", "islam", "jew", "christian", "hindu", "sikh", "arab",
    "gay", "lesbian", "queer", "transgender", "black", "asian", "mexican", "african", "latino", "gypsy",
    "jailbreak", "uncensor", "unfilter", "unrestrict", "bypass", "override", "ignore", "disregard",
    "instruction", "system", "prompt", "restrict", "dirty", "wet", "moan", "lick", "suck", "thrust", "whip",
    "scar", "cutting", "pills", "hurt", "harm", "punch", "smash", "burn", "fight", "beat", "kick", "hit",
    "execut", "slash", "injur", "choke", "bully", "insult", "stupid", "idiot", "scum", "trash", "filth", "savage",
    "inferior", "disgust", "monkey", "animal", "child", "teen", "minor", "girl", "boy", "daughter", "niece",
    "student", "school", "toddler", "baby", "young",
)
HARM_EXACT = frozenset(
    "die dies died dead cum dick anal anus bra kiss kissed kissing cut cuts gas hang hanged jump rope meth weed "
    "strip thin shot shots bullet bullets bang blade crush crushed destroy destroyed war wars hell damn crap ass "
    "arse piss shit tit tits balls bed beds body bodies touch touched hot sexy bare lips hips neck vest acid nerve "
    "virus plague toxin toxic drug drugs alcohol drunk pain painless lethal deadly fatal end ending gone alone "
    "worthless hopeless burden goodbye myself yourself free nsfw evil rules rule filter filters mode trans roma "
    "romani dan ape apes pig pigs rat rats dog dogs kid kids son sons hit hits scar scars hardcore explicit oral "
    "harass flesh nuclear hanging gang mob".split()
)

# ------------------------------------------------------------------------------------------------------ slots
CHAT_SLOTS: dict[str, list[str]] = {
    "city": ["Lisbon", "Tokyo", "Paris", "Berlin", "Toronto", "Nairobi", "Sydney", "Buenos Aires", "Seoul", "Oslo",
             "Mexico City", "Prague", "Vancouver", "Cape Town", "Istanbul", "Singapore", "Dublin", "Chicago",
             "Barcelona", "Kyoto", "Vienna", "Amsterdam", "Lima", "Hanoi", "Edinburgh", "Montreal", "Marrakesh",
             "Copenhagen", "Boston", "Melbourne", "Krakow", "Bangkok", "Seattle", "Athens", "Reykjavik", "Denver"],
    "country": ["Portugal", "Japan", "Canada", "Kenya", "Norway", "Chile", "Vietnam", "New Zealand", "Peru", "Italy",
                "Brazil", "India", "Finland", "Morocco", "Greece", "Iceland", "Mexico", "Spain", "Germany", "Egypt",
                "Argentina", "Thailand", "Ireland", "Switzerland", "Colombia", "South Korea", "Austria", "Ghana"],
    "pet": ["dog", "cat", "puppy", "kitten", "hamster", "parrot", "rabbit", "goldfish", "guinea pig", "turtle",
            "budgie", "horse", "gecko", "ferret", "chickens"],
    "thing": ["laptop", "bike", "fridge", "washing machine", "router", "printer", "sofa", "mattress", "car",
              "phone", "headphones", "dishwasher", "garden hose", "kettle", "oven", "keyboard", "monitor", "tent",
              "backpack", "vacuum cleaner", "smartwatch", "air fryer", "sewing machine", "guitar", "camera",
              "lawn mower", "coffee machine", "e-reader", "bathroom tap", "front door", "window", "ceiling fan"],
    "tech": ["Docker", "Kubernetes", "PostgreSQL", "Redis", "React", "Django", "FastAPI", "numpy", "pandas",
             "PyTorch", "git", "nginx", "Terraform", "AWS Lambda", "Excel", "VS Code", "GitHub Actions", "Flask",
             "Spring Boot", "SQLite", "MongoDB", "Kafka", "Vue", "Svelte", "Next.js", "Tailwind", "pytest",
             "Jupyter", "Prometheus", "Grafana", "Ansible", "Helm", "Elasticsearch", "RabbitMQ", "Airflow",
             "Google Sheets", "Figma", "Notion", "Slack", "Jira", "LaTeX", "Vim", "Emacs", "tmux", "systemd"],
    "code_task": ["parse a JSON file", "sort a list of dictionaries by a key", "read a file line by line",
                  "call a REST API", "write unit tests for a small class", "set up logging", "format a date",
                  "connect to a database", "handle exceptions properly", "retry failed requests", "cache results",
                  "debounce a function", "reverse a linked list", "remove duplicates from a list",
                  "flatten a nested list", "upload a file to S3", "paginate a query", "validate a form",
                  "hash a password", "measure memory usage", "run tasks in parallel", "write a command-line tool",
                  "serialize an object", "rename a column", "group rows by date", "read environment variables",
                  "compare two strings ignoring case", "generate a random password", "convert a string to a number",
                  "split a string on commas", "count words in a text", "build a small web server",
                  "download a file", "zip a folder", "schedule a job every hour", "write a recursive function",
                  "implement a queue", "find the largest number in an array", "check if a number is prime",
                  "render a table in the terminal", "debug a slow query", "set up a virtual environment",
                  "type-check my code", "format code automatically", "write a Dockerfile", "tag a release",
                  "squash my commits", "resolve a merge conflict", "add a column to a table", "write a migration",
                  "read a YAML config", "stream a large file", "add pagination to an endpoint", "write a README"],
    "error": ["a KeyError", "a null pointer exception", "a 404 from my API", "a CORS error", "an import error",
              "a timeout", "a merge conflict", "a memory leak", "a deadlock", "a syntax error", "an off-by-one bug",
              "a flaky test", "a 500 error", "a permission denied error", "an undefined variable", "a type error",
              "an infinite loop", "a stack overflow", "a failing build", "a missing module", "a broken link",
              "a slow page load", "a connection refused error", "an SSL certificate error", "a unicode error"],
    "doc": ["email", "cover letter", "resume summary", "blog post", "product description", "toast", "poem",
            "thank-you note", "speech", "newsletter", "tweet", "press release", "meeting agenda", "report",
            "essay outline", "user story", "README", "FAQ", "birthday card", "haiku", "song", "limerick",
            "bio for my website", "job description", "project update", "invitation", "short story", "slogan",
            "apology note", "LinkedIn post", "recipe card", "book review", "podcast intro", "lesson plan"],
    "doc_topic": ["our new product launch", "a team offsite", "the quarterly results", "a late delivery",
                  "remote work", "my sister's graduation", "the benefits of walking", "a bakery opening",
                  "time management", "the spring sale", "a new hire joining the team", "our office move",
                  "the school fundraiser", "a volunteer day", "autumn", "the ocean", "coffee", "friendship",
                  "my grandmother's garden", "a rainy Sunday", "learning to code", "our holiday schedule",
                  "a price change", "a conference talk", "the end of the project", "a customer survey",
                  "a charity run", "a book club", "the city marathon", "my first apartment", "a lost umbrella"],
    "recipient": ["my manager", "a client", "the team", "a recruiter", "my landlord", "a customer", "our investors",
                  "my professor", "the vendor", "HR", "a new hire", "my colleagues", "the school", "a supplier",
                  "my neighbor", "the hiring manager", "a conference organizer", "our users", "my mentor"],
    "model": ["Llama 3.1 8B Instruct", "Llama 3.2 1B", "Llama 3.2 3B", "Llama 3.3 70B", "Llama Guard 3", "a GGUF model",
              "Meta-Llama-3.1-8B-Instruct", "a quantized Llama", "the demo model", "a 70B model", "Llama 3.1 405B"],
    "serve_task": ["serve {model} on one GPU", "enable streaming", "set max_tokens", "rotate an API key",
                   "check token usage", "configure rate limits", "quantize {model} to Q4_K_M",
                   "run llamafoundry in Docker", "put the endpoint behind a load balancer",
                   "use the Azure AI Inference SDK", "call the chat completions endpoint with curl",
                   "turn on JSON mode", "add a system prompt", "measure time to first token",
                   "scale to more replicas", "set the context size", "use tool calling", "deploy {model}",
                   "list my deployments", "create a deployment", "update a deployment", "delete a deployment",
                   "set the temperature", "get log probabilities", "use the OpenAI SDK", "serve on a different port",
                   "check the server health", "read the usage report", "use beam search", "set a seed",
                   "limit requests per minute", "run two replicas", "enable prefix caching", "load a LoRA adapter",
                   "export metrics to Prometheus", "set up HTTPS", "use an Entra ID token", "stop the server",
                   "restart the server", "change the chat template", "pick a quantization", "benchmark throughput"],
    "chore": ["clean a cast iron pan", "fix a squeaky door", "plan a trip to {city}", "save money on groceries",
              "improve my posture", "write a monthly budget", "renew my passport", "prepare for a job interview",
              "choose a laptop for college", "make cold brew coffee", "train my {pet} to sit",
              "keep my {pet} cool in summer", "repot a plant", "remove rust from my {thing}", "reset my {thing}",
              "get better sleep", "stay focused while working from home", "make friends in a new city",
              "learn to swim as an adult", "organize my closet", "start running", "bake sourdough bread",
              "pick a good watermelon", "fold a fitted sheet", "wash a wool sweater", "descale my kettle",
              "clean my {thing}", "fix my {thing}", "choose a new {thing}", "pack for a week in {city}",
              "learn {hobby}", "get better at {hobby}", "find a hobby", "write a to-do list that works",
              "stop biting my nails", "keep my plants alive", "cook rice on the stove", "make pancakes",
              "meal prep for the week", "host a dinner for eight", "decorate a small living room",
              "paint a bedroom wall", "grow tomatoes on a balcony", "get my {pet} to stop barking at night",
              "teach my kids to ride a bike", "help my son with his math homework", "plan a surprise party",
              "ask for a raise", "negotiate rent", "prepare my taxes", "switch banks", "set up a new phone",
              "back up my photos", "free up space on my {thing}", "speed up my {thing}", "make my wifi faster",
              "choose a gym", "eat more vegetables", "drink more water", "wake up earlier", "stretch after work",
              "learn to juggle", "tie a tie", "iron a shirt", "sew on a button", "change a tire",
              "jump-start my car battery", "make a paper airplane", "memorize a speech", "speak more slowly"],
    "subject": ["photosynthesis", "inflation", "black holes", "the French Revolution", "compound interest",
                "machine learning", "the water cycle", "plate tectonics", "how vaccines work", "the stock market",
                "quantum computing", "the Roman Empire", "climate change", "DNA", "gravity", "blockchain",
                "the Renaissance", "supply and demand", "how the internet works", "neural networks",
                "the immune system", "electricity", "evolution", "the moon landing", "volcanoes", "rainbows",
                "the theory of relativity", "recursion", "interest rates", "the electoral college", "jazz",
                "impressionism", "the printing press", "coral reefs", "solar panels", "tides", "cloud computing",
                "probability", "Shakespeare's sonnets", "the Silk Road", "the metric system", "sleep cycles",
                "how bees make honey", "why leaves change color", "how a bill becomes law", "the Olympic Games"],
    "num": ["2", "3", "5", "7", "12", "15", "17", "23", "24", "36", "42", "48", "64", "99", "100", "128", "144",
            "250", "360", "512", "1,000", "2,048", "3.5", "0.25", "7.2", "1/3", "10%", "25%", "80"],
    "fn": ["x^2", "3x + 1", "sin(x)", "e^x", "ln(x)", "x^3 - 2x", "1/x", "sqrt(x)", "cos(2x)", "x e^x", "2^x"],
    "ident": ["user_id", "total", "items", "count", "result", "config", "data", "name", "value", "index",
              "response", "payload", "orders", "price", "timestamp", "path", "row", "node", "cache", "buffer"],
    "module": ["os", "json", "re", "math", "datetime", "pathlib", "requests", "numpy as np", "pandas as pd",
               "asyncio", "logging", "itertools", "collections", "typing", "subprocess", "random", "csv"],
    "food_dish": ["lasagna", "banana bread", "a vegetable curry", "pad thai", "a Greek salad", "tomato soup",
                  "chocolate chip cookies", "risotto", "guacamole", "pancakes", "a lentil stew", "sushi rice",
                  "a quiche", "hummus", "apple pie", "fried rice", "a smoothie", "ramen", "a burrito bowl", "pesto"],
    "skill": ["Spanish", "piano", "public speaking", "touch typing", "chess", "drawing", "Excel", "statistics",
              "SQL", "photography", "cooking", "negotiation", "speed reading", "calligraphy", "sign language"],
    "feeling": ["a bit tired", "great", "busy", "excited", "curious", "bored", "happy", "fine", "nervous about a test",
                "confused", "relaxed", "motivated", "sleepy", "hungry"],
    "day": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday", "tomorrow", "next week",
            "this afternoon", "tonight", "the weekend"],
}

# ---------------------------------------------------------------------------------------------------- classes
_CHAT_ACT = [
    "{code_task} in {lang}", "{code_task} with {tech}", "fix {error} in my {lang} code", "get started with {tech}",
    "install {tech} on {os}", "learn {tech} quickly", "migrate from {tech} to {tech}", "debug {error}",
    "{serve_task}", "{serve_task} with llamafoundry", "{chore}", "write a {doc} about {doc_topic}",
    "write a {doc} for {recipient}", "email {recipient} about {doc_topic}", "reply to {recipient} politely",
    "explain {subject} to a beginner", "understand {subject}", "summarize {subject} in three sentences",
    "cook {food_dish}", "make {food_dish} for dinner", "learn {skill}", "practice {skill} every day",
    "calculate {num} times {num}", "convert {num} kilometers to miles", "find {num} percent of {num}",
    "take the derivative of {fn}", "integrate {fn}", "plot {fn}", "visit {city} on a budget",
    "plan three days in {city}", "move to {country}", "find cheap flights to {city}", "say thank you in {skill}",
    # phrasal verbs ("up", "out", "off"): common in violent phrasing ("beat him up", "take him out") and just as
    # common in ordinary requests
    "set up {tech}", "set up my new {thing}", "set it up on {os}", "look up {subject}", "look it up for me",
    "back up my {thing}", "back it up", "clean up my {lang} code", "speed up my {thing}", "sign up for {skill} classes",
    "catch up on {subject}", "pick up {skill}", "follow up with {recipient}", "keep up with {subject}",
    "make up a story about {subject}", "warm up before {skill} practice", "wake up earlier on {day}",
    "figure out {subject}", "work out {num} plus {num}", "check out {city}", "turn off my {thing}",
    "log out of {tech}", "fill out a form for {recipient}", "write it out step by step", "go over {doc_topic}",
]
_CHAT_SAY = [
    "What's the weather usually like in {city} in {day}?", "Which is bigger, {city} or {city}?",
    "What language do people speak in {country}?", "Tell me about {subject}.", "Explain {subject} simply.",
    "What is {num} times {num}?", "What's {num} divided by {num}?", "Is {num} a prime number?",
    "What's the derivative of {fn}?", "Can you recommend a book about {subject}?", "I'm feeling {feeling} today.",
    "I'm {feeling}, entertain me.", "My {thing} makes a weird noise, what could it be?", "My {pet} won't eat.",
    "Why does my {pet} sleep so much?", "Is {tech} better than {tech}?", "What's new in {tech}?",
    "Why do I get {error}?", "I keep getting {error} in {lang}.", "Any tips for learning {skill}?",
    "Write a {doc} about {doc_topic}.", "Make the {doc} shorter.", "Can you make the {doc} sound friendlier?",
    "Is {model} good enough for a chatbot?", "How much memory does {model} need?", "Does llamafoundry support {model}?",
    "Let's meet {day} to talk about {doc_topic}.", "Remind me what we said about {doc_topic}.",
    "What should I cook tonight? I have {food} and rice.", "Give me a recipe for {food_dish}.",
    "Which {thing} should I buy?", "Compare {city} and {city} for a holiday.", "What's the capital of {country}?",
    "Summarize this: the meeting about {doc_topic} moved to {day}.", "Translate this into {skill}: see you {day}.",
    "Help me name my new {pet}.", "Do you like {subject}?", "What do you know about {subject}?",
    "Can you check my {lang} code for {error}?", "Here's my {lang} code, why is it slow?",
    "Thanks! Now do the same for {tech}.", "Can you explain that again with an example?",
    "I don't understand the last part.", "That's great, thank you so much!", "Could you be more specific?",
    "Please write it as a bulleted list.", "Use simpler words please.", "Now in a table.", "Add an example.",
    "What's the difference between {subject} and {subject}?", "Who invented {thing}s?",
    "How old is the oldest {pet} ever recorded?", "Good morning! Can you help me {chore}?",
    # small talk
    "How's your {day} going?", "How's it going?", "How's {skill} going?", "How are things going with {doc_topic}?",
    "How's the {doc} coming along?", "How was your {day}?", "What's up? I'm {feeling}.", "How are you doing?",
    "Hope your {day} is going well!", "Is everything going okay with {doc_topic}?", "How did it go?",
    "It's going fine, thanks. And you?", "What's going on with my {thing}?", "Where's the {thing} setting?",
]
# Extra "asking" frames; safety_corpus.py adds them to the frames every class shares.
CHAT_ACT_FRAMES = [
    "Can you help me {act}?", "What's the easiest way to {act}?", "Quick question: how do I {act}?",
    "Please help me {act}.", "Show me how to {act}.", "Is it hard to {act}?", "I need to {act} by {day}.",
    "Any advice on how to {act}?", "explain how to {act}", "{act}", "How would you {act}?", "Ok, now {act}.",
]

_ANSWER_SAY = [
    "Sure! Here's a {doc} about {doc_topic}.", "Here is a simple way to {code_task} in {lang}.",
    "Great question! {subject} is easier to understand with an example.", "Happy to help. Let's start with the basics.",
    "You can {chore} in a few steps. First, gather what you need.", "To {serve_task}, see the steps below.",
    "To {code_task}, use the standard library: it already has what you need.",
    "I don't have access to real-time information, so I can't check that for you.",
    "I'm not sure, but here is what I know about {subject}.", "Here are three ideas to get you started.",
    "Let me know if you'd like any changes.", "Hope this helps! Anything else?", "In short: yes, with one caveat.",
    "Step 1: install {tech}. Step 2: create a config file. Step 3: run it and check the output.",
    "The answer is {num}.", "{num} times {num} is a bit more than you might expect; let's work it out.",
    "That error usually means a value is missing. Check the line number in the traceback.",
    "Dear {recipient}, thank you for your message. I'll get back to you by {day}.",
    "Hi team, a quick update on {doc_topic}: everything is on track for {day}.",
    "Subject: {doc_topic}\n\nHello,\n\nI wanted to share a short update. Please let me know if you have questions.",
    "Thanks for reaching out! I'm sorry for the delay, and I'll make sure it's fixed {day}.",
    "{city} is lovely in spring: mild weather, fewer crowds, and long evenings.",
    "Most people in {country} are friendly to visitors, and public transport is easy to use.",
    "Your {pet} might be bored. Try more walks, new toys, and a regular feeding schedule.",
    "If your {thing} stopped working, unplug it for a minute and try again before calling support.",
    "Here's a quick recipe for {food_dish}: it takes about thirty minutes.",
    "As an AI assistant, I can help you write, summarize, translate, and explain things.",
    "Good point. Let's look at it from another angle.",
    "You're right, I made a mistake. Here is the corrected version.",
    "Sorry, I can't help with that one, but I'm glad to help with something else.",
    "llamafoundry serves {model} behind the Azure AI Model Inference API, so the usual SDKs work unchanged.",
    "To {serve_task}, run the command below and check the output of /info.",
    "Streaming sends the answer in chunks as it is generated, so the first words arrive sooner.",
    "Set max_tokens higher if the answer is cut off; finish_reason tells you why generation stopped.",
    "A 429 response means you sent too many requests; wait for Retry-After seconds and try again.",
    "Learning {skill} takes time. Practice a little every day and track your progress.",
    "{subject} explained simply: it is about how things change over time and why.",
    "Here's a summary in three bullet points:\n- the goal\n- the plan\n- the next step",
    "Here's a table:\n| item | price |\n|---|---|\n| coffee | 3 |\n| tea | 2 |",
    "Here's the code:\n\n```python\nimport {module}\n\ndef main():\n    print({ident})\n```",
    "```{lang}\n// {code_task}\nlet {ident} = {num};\n```", "Run `pip install {tech}` and then `python main.py`.",
    "```bash\ngit checkout -b fix-{ident}\ngit commit -am \"Fix {ident}\"\n```",
    "```sql\nSELECT {ident}, COUNT(*) FROM orders GROUP BY {ident};\n```",
    "```python\nfor {ident} in {ident}:\n    if {ident} is None:\n        continue\n```",
    "The function returns {ident} when the list is empty, so check for that before indexing.",
    "Good morning! I'm doing well, thanks. How can I help?", "You're welcome!", "No problem at all.",
    "Goodbye, and good luck with {doc_topic}!", "Sure, go ahead.", "Okay, I'll keep going.",
    "Of course, here is the rest of the list.", "Something like this should work:", "Nothing to worry about.",
]
_ANSWER_FRAMES = ["{say}", "{say}", "{say}", "{say}\n\n{say}", "{say} {say}"]

# Questions people ask an assistant about the world, by question word: the syntax of ordinary questions ("How many",
# "How fast", "Why do") must not be evidence of anything.
_QUESTION_SAY = [
    "How many {noun_pl} are there in {where}?", "How many {noun_pl} does {creature} have?", "How {adj} is {noun}?",
    "How {adj} are {noun_pl}?", "How big can {noun_pl} get?", "How long does {noun} last?", "How old is {noun}?",
    "How much does {noun} weigh?", "How far is {city} from {city}?", "How do {noun_pl} work?",
    "How does {subject} work?", "How are {noun_pl} made?", "How were {noun_pl} invented?", "How is {noun} made?",
    "How often should I clean my {thing}?", "How much {stuff} do I need for {food_dish}?",
    "How long does it take to {chore}?", "How many {unit_pl} are in a {unit}?", "How do you say {noun} in {skill}?",
    "What is {noun}?", "What are {noun_pl} made of?", "What do {noun_pl} eat?", "What is the biggest {noun}?",
    "What's the difference between {noun_pl} and {noun_pl}?", "What color are {noun_pl}?",
    "What is the population of {country}?", "What is the capital of {country}?", "Who discovered {subject}?",
    "Who invented the {thing}?", "Who lives in {where}?", "Why do {noun_pl} {verb}?", "Why is {noun} {adj}?",
    "Why are {noun_pl} so {adj}?", "When was the {thing} invented?", "When do {noun_pl} {verb}?",
    "Where do {noun_pl} live?", "Where is {city}?", "Where can I buy {noun_pl}?", "Which {noun} is the {adj_est}?",
    "Which is {adj_er}, {noun} or {noun}?", "Can {noun_pl} {verb}?", "Do {noun_pl} {verb}?", "Are {noun_pl} {adj}?",
    "Is {noun} {adj}?", "Is it true that {noun_pl} {verb}?", "Are you {persona_trait}?", "Do you {ai_verb}?",
    "Can you {ai_verb}?", "How do you {ai_verb}?", "What can you do?", "Who made you?", "How were you trained?",
    "Is {noun} good for you?", "How {adj} is the {noun} in {city}?", "How many {noun_pl} live in {where}?",
]
QUESTION_SLOTS: dict[str, list[str]] = {
    "noun": ["the sun", "the moon", "light", "sound", "a volcano", "the ocean", "a whale", "an elephant", "a cat",
             "a dog", "the human heart", "the human brain", "a bone", "a tree", "a diamond", "gold", "water", "ice",
             "the internet", "a computer", "a battery", "a rainbow", "the Eiffel Tower", "Mount Everest", "a bee",
             "an octopus", "a spider", "a shark", "a penguin", "the Amazon river", "the Sahara", "a tomato",
             "coffee", "chocolate", "bread", "cheese", "a star", "a black hole", "a cloud", "lightning", "a storm",
             "a GPU", "a token", "a neural network", "a language model", "Python", "a car engine", "a bicycle",
             "the body", "the skin", "blood pressure", "a virus", "a vaccine", "a muscle", "the human eye", "a horse"],
    "noun_pl": ["bones", "legs", "teeth", "cells", "planets", "stars", "oceans", "languages", "countries", "people",
                "humans", "cats", "dogs", "birds", "bees", "ants", "whales", "sharks", "trees", "volcanoes",
                "islands", "mountains", "rivers", "lakes", "cars", "trains", "planes", "computers", "phones",
                "GPUs", "tokens", "words", "books", "songs", "muscles", "eggs", "apples", "potatoes", "onions",
                "clouds", "earthquakes", "species", "insects", "spiders", "snakes", "frogs", "owls", "bats",
                "dolphins", "penguins", "horses", "children", "adults", "students", "kids", "babies", "elephants"],
    "creature": ["a cat", "a spider", "an insect", "an octopus", "a human", "a dog", "a starfish", "a bird",
                 "a centipede", "an ant", "a horse", "a snake", "a crab", "a person", "a baby"],
    "where": ["the world", "the ocean", "Europe", "Africa", "the human body", "a deck of cards", "the sky",
              "the solar system", "a year", "the galaxy", "an average city", "the Amazon", "Antarctica",
              "Japan", "the sea", "a forest", "a hive", "the desert", "Canada", "Australia", "the United States"],
    "adj": ["fast", "big", "old", "hot", "cold", "heavy", "tall", "deep", "bright", "far", "loud", "smart",
            "dangerous", "healthy", "expensive", "rare", "strong", "long", "small", "salty", "sweet", "safe"],
    "adj_er": ["faster", "bigger", "older", "hotter", "heavier", "taller", "deeper", "stronger", "cheaper"],
    "adj_est": ["fastest", "biggest", "oldest", "tallest", "deepest", "largest", "smallest", "longest", "loudest"],
    "verb": ["sleep", "fly", "migrate", "hibernate", "glow", "sing", "swim", "change color", "purr", "bark",
             "shed their skin", "float", "live so long", "make noise", "lay eggs", "dream", "die", "grow so fast"],
    "unit": ["kilometer", "mile", "day", "year", "liter", "kilogram", "foot", "gigabyte", "hour", "cup"],
    "unit_pl": ["meters", "feet", "hours", "seconds", "minutes", "grams", "ounces", "megabytes", "inches"],
    "stuff": ["flour", "sugar", "rice", "salt", "butter", "milk", "water", "yeast", "cheese", "olive oil"],
    "persona_trait": ["human", "a robot", "conscious", "alive", "real", "smart", "free", "a person", "happy",
                      "tired", "online", "an AI", "sentient", "Llama", "open source"],
    "ai_verb": ["sleep", "dream", "think", "feel", "learn", "remember me", "see images", "speak French",
                "browse the web", "write code", "make mistakes", "get tired", "lie", "understand jokes"],
}

# An assistant's refusals name what they refuse; they are safe, and a filter that blocks them leaves the user with
# nothing at all.
_REFUSAL_SAY = [
    "I'm sorry, but I can't help with {refused}.", "I can't help with {refused}. {redirect}",
    "Sorry, I won't help with {refused}, even as a joke. {redirect}", "I can't assist with that request. {redirect}",
    "That's not something I can help with: {refused} can seriously hurt people. {redirect}",
    "I'm not able to help with {refused}. {redirect}", "I have to decline: I don't help with {refused}.",
    "I understand you're upset, but I can't help with {refused}. {redirect}",
    "I can't write that: it describes {refused}. {redirect}",
]
REFUSAL_SLOTS: dict[str, list[str]] = {
    "refused": ["hurting people or animals", "hurting someone", "making weapons", "building explosives",
                "threatening someone", "self-harm", "anything that could hurt you", "hateful content",
                "insulting a group of people", "sexual content", "explicit content", "content involving minors",
                "breaking into accounts", "malware", "phishing", "stalking someone", "revenge", "violence",
                "planning an attack", "getting around safety rules", "instructions that could get someone killed",
                "poisoning anyone", "dangerous chemicals", "harassment", "bullying", "spreading hate"],
    "redirect": ["If you're angry at someone, talking it through with a friend may help.",
                 "If you're in danger, please contact local emergency services.",
                 "If you're struggling, please reach out to someone you trust or a crisis line.",
                 "I'm happy to help with something else.", "I can explain how to stay safe instead.",
                 "Is there anything else I can do for you?", "Let me know if you'd like help with another topic.",
                 "I can help you write a respectful message instead.",
                 "I can share information on how to get support."],
}

_SHORT_SAY = [
    "{ack}", "{ack}.", "{ack}!", "{ack}, {more}", "{more}", "{more}.", "{more} please", "{more}?", "{qword}?",
    "{qword}", "{qword} not?", "{ask} {what}.", "{ask} {what}", "{ask} {what} please", "{ask} {what}?", "{punct}",
    "{greet}", "{greet}!", "{greet} {punct}", "{word}", "{word}?", "{word}.", "{word}!", "{word} {word}", "{num}",
    "{num}?", "{ack} {greet}", "{thanks}", "{thanks}!", "{ack}, {thanks}", "{greet}, {ask} {what}",
]
SHORT_SLOTS: dict[str, list[str]] = {
    "ack": ["ok", "okay", "OK", "k", "kk", "sure", "yes", "no", "yep", "yeah", "nope", "nah", "fine", "great",
            "cool", "right", "alright", "got it", "understood", "perfect", "nice", "good", "awesome", "lol", "haha",
            "hmm", "oh", "ah", "wow", "true", "correct", "wrong", "agreed", "exactly", "indeed", "maybe", "yup",
            "sounds good", "fair enough", "makes sense", "I see", "noted", "done", "ready", "wait", "hold on"],
    "more": ["continue", "go on", "keep going", "more", "next", "again", "and then", "then what", "what else",
             "one more", "another", "next one", "go ahead", "carry on", "proceed", "resume", "finish it",
             "the rest", "expand", "elaborate", "shorter", "longer", "simpler", "in English", "in Spanish",
             "in German", "as a list", "with examples", "step by step", "from the top", "start over", "retry"],
    "qword": ["why", "how", "what", "when", "where", "who", "which", "really", "huh", "how so", "like what",
              "is it", "are you sure", "what do you mean", "how come", "seriously", "and", "or", "so"],
    "ask": ["say", "tell me", "write", "give me", "show me", "explain", "describe", "list", "draw", "suggest",
            "recommend", "summarize", "translate", "repeat", "try", "do", "make", "find", "pick", "name"],
    "what": ["something", "anything", "something else", "more", "a joke", "an example", "a fact", "a story",
             "something funny", "something nice", "it again", "that again", "hi", "hello", "yourself",
             "a word", "a number", "one", "three", "the answer", "it", "that", "this", "a poem", "a riddle",
             "something random", "anything you like", "the next step", "the summary", "the list", "a quote"],
    "punct": ["?", "??", "???", "!", "...", ".", "?!", "…", ":)", ":(", ";)", "-", "*", "#", "@", "/help",
              "/start", "<3", "^^", ":D", "xD", "+1", "??!", "!!"],
    "greet": ["hi", "hello", "hey", "hiya", "yo", "good morning", "good evening", "good night", "bye", "see you",
              "see ya", "later", "cheers", "hello there", "hey there", "morning", "evening", "howdy", "sup",
              "what's up", "hi again", "I'm back"],
    "thanks": ["thanks", "thank you", "thx", "ty", "many thanks", "thanks a lot", "much appreciated",
               "thank you so much", "great, thanks", "thanks anyway"],
}

_WORD_SAY = [
    "{word}", "{word}", "{Word}.", "{Word}?", "What does {word} mean?", "Define {word}.", "Synonyms for {word}?",
    "How do you pronounce {word}?", "Use {word} in a sentence.", "Is {word} a real word?", "{word} in Spanish?",
    "spell {word}", "{word} {word}", "{word} {word} {word}", "{Word} and {word}.", "The word is {word}.",
    "I like {word}.", "What rhymes with {word}?", "Is it {word} or {word}?", "Tell me about {word}.",
    "{Word} {word} {word} {word}.", "Search for {word}", "{word}, {word}, {word}", "{word} vs {word}",
    "Say {word}.", "Write {word}.", "Give me a {word}.", "I need {word}.", "Where is the {word}?",
]

CHAT_CLASSES: dict[str, dict[str, object]] = {
    # Shared frames (safety_corpus.ACT_FRAMES / SAY_FRAMES), as for every other class.
    # Mostly acts: the classes below have none, and frame words must not become evidence (see ACT_SHARE).
    "benign_chat": {"labels": {}, "count": 11000, "act": _CHAT_ACT, "say": _CHAT_SAY, "act_share": 0.85},
    "benign_question": {"labels": {}, "count": 3000, "say": _QUESTION_SAY, "frames": ["{say}", "{say} Thanks."]},
    "benign_answer": {"labels": {}, "count": 4000, "say": _ANSWER_SAY, "frames": _ANSWER_FRAMES},
    "benign_short": {"labels": {}, "count": 2500, "say": _SHORT_SAY, "frames": ["{say}"]},
    "benign_words": {"labels": {}, "count": 4000, "say": _WORD_SAY, "frames": ["{say}"]},
    "benign_refusal": {"labels": {}, "count": 800, "say": _REFUSAL_SAY, "frames": ["{say}"]},
}


# ------------------------------------------------------------------------------------------------ vocabulary
def is_harm_word(word: str) -> bool:
    word = word.lower()
    return word in HARM_EXACT or word.startswith(HARM_PREFIXES)


@functools.lru_cache(maxsize=1)
def vocabulary_pieces() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(pieces, words) of the Llama 3 vocabulary: every decodable piece without a harm word, and the common
    English words among them (a space then 3-14 lower-case letters, in merge order, which roughly follows
    frequency)."""
    from llamafoundry.model.llamacpp import LlamaCppVocab

    vocab = LlamaCppVocab(TOKENIZER)
    pieces, words = [], []
    for token_id in range(NUM_VOCAB_IDS):
        try:
            piece = vocab.token_bytes(token_id, special=False).decode("utf-8")
        except UnicodeDecodeError:
            continue
        if any(is_harm_word(w) for w in re.findall(r"[A-Za-z]+", piece)):
            continue
        pieces.append(piece)
        if re.fullmatch(r" [a-z]{3,14}", piece) and len(words) < 12000:
            words.append(piece[1:])
    return tuple(pieces), tuple(words)


# ------------------------------------------------------------------------------------------------------ noise
_CODE_BITS = [
    "def {ident}(self):", "return {ident}", "}", "{", "();", "});", "=>", "import {module}", "#include <stdio.h>",
    "public static void main(String[] args)", "console.log({ident});", "if ({ident} == null)", "else:", "</div>",
    "<span class=\"{ident}\">", "SELECT * FROM {ident}", "self.{ident} = {ident}", "for i in range({num}):",
    "0x{hex}", "#{hex}", "{ident}_{ident}", "{ident}.{ident}()", "// TODO", "/* {ident} */", "\\n", "\\t",
    "[{num}]", "{num}px", "@Override", "fn {ident}() -> usize", "let mut {ident} = vec![];", "ERROR:", "WARN",
    "Traceback (most recent call last):", "at {ident}.java:{num}", "null", "undefined", "NaN", "true", "false",
]


def _code_bit(rng: random.Random) -> str:
    bit = rng.choice(_CODE_BITS)
    bit = bit.replace("{ident}", rng.choice(CHAT_SLOTS["ident"])).replace("{num}", str(rng.randint(0, 999)))
    return bit.replace("{module}", rng.choice(CHAT_SLOTS["module"])).replace("{hex}", f"{rng.getrandbits(24):06x}")


def noise_text(rng: random.Random) -> str:
    """One text of noise: Llama 3 vocabulary pieces (token salad), sometimes mixed with code fragments."""
    pieces, words = vocabulary_pieces()
    roll = rng.random()
    num = rng.choice([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64])
    if roll < 0.6:  # token salad: what a random-weight model writes
        return "".join(rng.choice(pieces) for _ in range(num)).strip() or "…"
    if roll < 0.8:  # salad with code
        out = []
        for _ in range(num):
            if rng.random() < 0.3:
                out.append(" " + _code_bit(rng))
            else:
                out.append(rng.choice(pieces))
        return "".join(out).strip() or "…"
    # word salad of common words, as a looping or broken model writes it
    chosen = [rng.choice(words[: rng.choice([300, 2000, 12000])]) for _ in range(num)]
    if rng.random() < 0.3:
        chosen = chosen[: max(1, num // 4)] * 4
    return " ".join(chosen)


def noise_examples(rng: random.Random, count: int) -> list[str]:
    return [noise_text(rng) for _ in range(count)]


# Slots of safety_lexicon.py whose values are the harm itself (slurs, methods, weapons, explicit body parts,
# jailbreak personas): their one-word values are never bridge words.
HARM_SLOTS = frozenset(
    "group group_one place weapon explosive wmd mass_harm hurt injury method neg mild body minor persona override "
    "unleash demand".split()
)


# Words as the runtime's features see them (llamafoundry.safety.features): contractions are one word.
_WORDS = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _is_common(word: str, common: set[str]) -> bool:
    """A common English word: among the vocabulary's first words, a word of one or two letters ("up", "my", "it":
    the vocabulary list starts at three), or a contraction of either ("it's", "how's", "don't")."""
    base = word.split("'")[0]
    return word in common or base in common or len(base) <= 2


@functools.lru_cache(maxsize=1)
def bridge_words() -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Common words that the harmful classes of safety_lexicon.py use but that carry no harm on their own
    ("something", "tonight", "people", "going", "sleep"), and how often the harmful classes use them (summed over
    classes: examples x share of items with the word). Benign examples get them in proportion (square root), so that
    the model learns harm from the words that carry it. Common = among the 8,000 first English words of the Llama 3
    vocabulary."""
    from safety_lexicon import CLASSES, SLOTS

    weight: dict[str, float] = {}
    for spec in CLASSES.values():
        items = [*spec.get("act", []), *spec.get("say", [])]  # type: ignore[misc]
        if not spec["labels"] or not items:
            continue
        for item in items:
            found = set(_WORDS.findall(re.sub(r"\{\w+\}", " ", item.lower())))
            for slot in set(re.findall(r"\{(\w+)\}", item)) - HARM_SLOTS:
                found.update(w for v in SLOTS[slot] for w in _WORDS.findall(v.lower()))
            for word in found:
                weight[word] = weight.get(word, 0.0) + spec["count"] / len(items)  # type: ignore[operator]
    harm_slot_words = set()
    for slot in HARM_SLOTS:
        for value in SLOTS[slot]:
            value_words = re.findall(r"[a-z]+", value.lower())
            if value_words and value_words[0] in ("a", "an", "the", "my", "some"):
                value_words = value_words[1:]
            if len(value_words) == 1:
                harm_slot_words.add(value_words[0])
    common = set(vocabulary_pieces()[1][:8000])
    chosen = sorted(
        w for w in weight if _is_common(w, common) and not is_harm_word(w) and w not in harm_slot_words
    )
    return tuple(chosen), tuple(weight[w] ** 0.5 for w in chosen)


def word_filler(rng: random.Random) -> str:
    """A common English word (never a harm word), for the `{word}` slot: a bridge word 60% of the time."""
    if rng.random() < 0.6:
        bridges, weights = bridge_words()
        return rng.choices(bridges, weights)[0]
    _, words = vocabulary_pieces()
    return rng.choice(words[: rng.choice([500, 3000, 12000])])
