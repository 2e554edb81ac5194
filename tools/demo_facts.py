"""Intent table of the demo model: short general knowledge (capitals, languages, science, history, numbers).

Families of facts share question templates ("What is the capital of {country}?"), so the model learns the
pattern and not only the strings; single facts each get their own handful of phrasings.
"""

from __future__ import annotations

from demo_topics import Intent

CAPITALS = {
    "France": "Paris",
    "Germany": "Berlin",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Portugal": "Lisbon",
    "the United Kingdom": "London",
    "Ireland": "Dublin",
    "the Netherlands": "Amsterdam",
    "Belgium": "Brussels",
    "Switzerland": "Bern",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Sweden": "Stockholm",
    "Norway": "Oslo",
    "Denmark": "Copenhagen",
    "Finland": "Helsinki",
    "Greece": "Athens",
    "Turkey": "Ankara",
    "Russia": "Moscow",
    "Ukraine": "Kyiv",
    "Egypt": "Cairo",
    "Kenya": "Nairobi",
    "Nigeria": "Abuja",
    "South Africa": "Pretoria",
    "Morocco": "Rabat",
    "Japan": "Tokyo",
    "China": "Beijing",
    "India": "New Delhi",
    "South Korea": "Seoul",
    "Thailand": "Bangkok",
    "Vietnam": "Hanoi",
    "Indonesia": "Jakarta",
    "Australia": "Canberra",
    "New Zealand": "Wellington",
    "Canada": "Ottawa",
    "the United States": "Washington, D.C.",
    "Mexico": "Mexico City",
    "Brazil": "Brasilia",
    "Argentina": "Buenos Aires",
    "Chile": "Santiago",
    "Peru": "Lima",
    "Colombia": "Bogota",
    "Cuba": "Havana",
    "Iceland": "Reykjavik",
    "Hungary": "Budapest",
    "the Czech Republic": "Prague",
}

LANGUAGES = {
    "France": "French",
    "Germany": "German",
    "Italy": "Italian",
    "Spain": "Spanish",
    "Portugal": "Portuguese",
    "Brazil": "Portuguese",
    "Mexico": "Spanish",
    "Argentina": "Spanish",
    "Japan": "Japanese",
    "China": "Mandarin Chinese",
    "South Korea": "Korean",
    "Russia": "Russian",
    "Greece": "Greek",
    "Turkey": "Turkish",
    "the Netherlands": "Dutch",
    "Sweden": "Swedish",
    "Poland": "Polish",
    "Egypt": "Arabic",
    "Thailand": "Thai",
    "Vietnam": "Vietnamese",
    "Australia": "English",
    "the United States": "English",
    "Finland": "Finnish",
}

LEGS = {
    "spider": 8,
    "dog": 4,
    "cat": 4,
    "horse": 4,
    "llama": 4,
    "bird": 2,
    "chicken": 2,
    "ant": 6,
    "bee": 6,
    "butterfly": 6,
    "beetle": 6,
    "cow": 4,
    "duck": 2,
    "elephant": 4,
    "crab": 10,
    "penguin": 2,
}

_CAPITAL_QUESTIONS = (
    "What is the capital of {x}?",
    "What's the capital of {x}?",
    "Which city is the capital of {x}?",
    "Capital of {x}?",
    "Tell me the capital of {x}.",
    "What city is the capital of {x}?",
    "Do you know the capital of {x}?",
    "What is {x}'s capital city?",
    "Name the capital of {x}.",
)
_CITY_QUESTIONS = ("Tell me about {y}.", "Where is {y}?", "Which country is {y} in?", "What is {y}?")
_CAPITAL_ANSWERS = ("The capital of {x} is {y}.", "{y} is the capital of {x}.")
_LANGUAGE_QUESTIONS = (
    "What language do people speak in {x}?",
    "What is the official language of {x}?",
    "Which language is spoken in {x}?",
    "What language is spoken in {x}?",
    "What do people speak in {x}?",
    "What's the main language of {x}?",
)
_LANGUAGE_ANSWERS = ("Most people in {x} speak {y}.", "The main language of {x} is {y}.")
_LEG_QUESTIONS = (
    "How many legs does {a} have?",
    "Number of legs of {a}?",
    "How many feet does {a} have?",
    "How many legs has {a} got?",
)
_LEG_ANSWERS = ("{A} has {y} legs.",)

# (short name, question phrasings, answers)
SINGLE_FACTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (
        "languages",
        (
            "How many languages are there in the world?",
            "How many languages exist?",
            "How many languages do people speak?",
            "How many languages are spoken on Earth?",
            "Roughly how many languages are there?",
            "How many human languages are there?",
            "Number of languages in the world?",
        ),
        (
            "There are about 7,000 languages spoken in the world today. Many of them have only a few thousand "
            "speakers.",
            "Roughly 7,000 languages are spoken around the world, and about 40 percent of them are endangered.",
        ),
    ),
    (
        "most_spoken",
        (
            "Which language has the most speakers?",
            "What is the most spoken language?",
            "What language do most people speak?",
        ),
        (
            "English has the most speakers in total, counting people who learned it as a second language. Mandarin "
            "Chinese has the most native speakers.",
        ),
    ),
    (
        "planets",
        (
            "How many planets are in the solar system?",
            "How many planets are there?",
            "Name the planets.",
            "What are the planets of the solar system?",
        ),
        ("There are eight planets: Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune.",),
    ),
    (
        "largest_planet",
        (
            "What is the largest planet?",
            "Which planet is the biggest?",
            "What's the biggest planet in the solar system?",
        ),
        ("Jupiter is the largest planet in the solar system. It is more than eleven times wider than Earth.",),
    ),
    (
        "sun",
        ("What is the sun?", "What is the Sun made of?", "Is the sun a star?", "How hot is the sun?"),
        ("The Sun is a star, a huge ball of hydrogen and helium gas. Its surface is about 5,500 degrees Celsius.",),
    ),
    (
        "moon",
        ("How far away is the moon?", "What is the distance to the moon?", "How far is the Moon from Earth?"),
        ("The Moon is about 384,000 kilometers from Earth, roughly 30 times the width of our planet.",),
    ),
    (
        "earth_age",
        ("How old is the Earth?", "What is the age of the Earth?", "When did the Earth form?"),
        ("The Earth is about 4.5 billion years old.",),
    ),
    (
        "universe_age",
        ("How old is the universe?", "When did the universe begin?"),
        ("The universe is about 13.8 billion years old, counting from the Big Bang.",),
    ),
    (
        "light_speed",
        ("What is the speed of light?", "How fast does light travel?", "How fast is light?"),
        ("Light travels at about 300,000 kilometers per second in a vacuum.",),
    ),
    (
        "boiling",
        ("At what temperature does water boil?", "What is the boiling point of water?", "When does water boil?"),
        ("At sea level, water boils at 100 degrees Celsius, which is 212 degrees Fahrenheit.",),
    ),
    (
        "freezing",
        ("At what temperature does water freeze?", "What is the freezing point of water?"),
        ("Water freezes at 0 degrees Celsius, which is 32 degrees Fahrenheit.",),
    ),
    (
        "water_formula",
        ("What is the chemical formula of water?", "What is water made of?", "What is H2O?"),
        ("Water is H2O: each molecule has two hydrogen atoms and one oxygen atom.",),
    ),
    (
        "sky_blue",
        ("Why is the sky blue?", "What makes the sky blue?", "Why does the sky look blue?"),
        (
            "Sunlight is scattered by the air, and blue light scatters much more than red light, so the sky looks "
            "blue from every direction.",
        ),
    ),
    (
        "continents",
        ("How many continents are there?", "What are the continents?", "Name the continents."),
        ("There are seven continents: Africa, Antarctica, Asia, Australia, Europe, North America and South America.",),
    ),
    (
        "oceans",
        ("What is the largest ocean?", "Which ocean is the biggest?", "How many oceans are there?"),
        ("The Pacific is the largest ocean. There are five oceans: Pacific, Atlantic, Indian, Southern and Arctic.",),
    ),
    (
        "mountain",
        ("What is the tallest mountain?", "What is the highest mountain in the world?", "How tall is Mount Everest?"),
        ("Mount Everest is the highest mountain above sea level, at about 8,849 meters.",),
    ),
    (
        "river",
        ("What is the longest river?", "Which river is the longest in the world?"),
        ("The Nile and the Amazon are the longest rivers, both about 6,500 kilometers long.",),
    ),
    (
        "desert",
        ("What is the largest desert?", "Which desert is the biggest?"),
        ("Antarctica is the largest desert. The largest hot desert is the Sahara in Africa.",),
    ),
    (
        "population",
        ("How many people live on Earth?", "What is the world population?", "How many people are there in the world?"),
        ("About 8 billion people live on Earth.",),
    ),
    (
        "biggest_country",
        ("What is the largest country?", "Which country is the biggest?", "What is the biggest country by area?"),
        ("Russia is the largest country by area. India and China have the most people.",),
    ),
    (
        "bones",
        ("How many bones are in the human body?", "How many bones does an adult have?"),
        ("An adult human has 206 bones.",),
    ),
    (
        "heart",
        ("What does the heart do?", "How does the heart work?", "Why do we have a heart?"),
        ("The heart is a muscle that pumps blood through the body, bringing oxygen and food to every cell.",),
    ),
    (
        "largest_animal",
        ("What is the largest animal?", "What is the biggest animal in the world?"),
        ("The blue whale is the largest animal that has ever lived. It can be 30 meters long.",),
    ),
    (
        "fastest_animal",
        ("What is the fastest animal?", "Which land animal is the fastest?"),
        ("The cheetah is the fastest land animal, reaching about 110 kilometers per hour.",),
    ),
    (
        "llamas",
        ("What is a llama?", "Where do llamas live?", "Tell me about llamas.", "What do llamas eat?"),
        (
            "A llama is a South American animal related to the camel. Llamas live in the Andes, eat grass, and have "
            "been used to carry loads for thousands of years.",
        ),
    ),
    (
        "rainbow",
        ("What are the colors of the rainbow?", "How many colors does a rainbow have?"),
        ("A rainbow has seven colors: red, orange, yellow, green, blue, indigo and violet.",),
    ),
    ("week", ("How many days are in a week?", "How many days in a week?"), ("A week has seven days.",)),
    (
        "year",
        ("How many days are in a year?", "How many days does a year have?"),
        ("A year has 365 days, or 366 in a leap year.",),
    ),
    (
        "hour",
        ("How many minutes are in an hour?", "How many seconds are in a minute?", "How many hours are in a day?"),
        ("There are 60 seconds in a minute, 60 minutes in an hour and 24 hours in a day.",),
    ),
    (
        "romeo",
        ("Who wrote Romeo and Juliet?", "Who is the author of Hamlet?", "Who was Shakespeare?"),
        ("William Shakespeare, the English playwright, wrote Romeo and Juliet and Hamlet around 1600.",),
    ),
    (
        "mona_lisa",
        ("Who painted the Mona Lisa?", "Who was Leonardo da Vinci?"),
        ("Leonardo da Vinci painted the Mona Lisa in the early 1500s. He was also an inventor and scientist.",),
    ),
    (
        "moon_landing",
        ("Who was the first person on the moon?", "When did humans land on the moon?", "Who walked on the moon first?"),
        ("Neil Armstrong was the first person to walk on the Moon, on July 20, 1969.",),
    ),
    ("ww2", ("When did World War II end?", "When did the Second World War end?"), ("World War II ended in 1945.",)),
    (
        "telephone",
        ("Who invented the telephone?",),
        ("Alexander Graham Bell is credited with inventing the telephone in 1876.",),
    ),
    (
        "pi",
        ("What is pi?", "What is the value of pi?"),
        ("Pi is the ratio of a circle's circumference to its diameter, about 3.14159.",),
    ),
    (
        "soccer",
        ("How many players are on a soccer team?", "How many players does a football team have?"),
        ("A soccer team has eleven players on the field, including the goalkeeper.",),
    ),
    (
        "learn_python",
        (
            "How can I learn Python?",
            "What is the best way to learn programming?",
            "How do I learn to code?",
            "Any tips for learning Python?",
        ),
        (
            "Start with a free beginner tutorial, then write small programs every day. Building a little project "
            "that you care about is the fastest way to learn.",
        ),
    ),
    (
        "sleep",
        ("How can I sleep better?", "Any tips for better sleep?", "I can't sleep. What should I do?"),
        (
            "Go to bed at the same time every day, keep your room dark and cool, and put screens away an hour "
            "before sleep. If it doesn't get better, talk to a doctor.",
        ),
    ),
    (
        "language_learning",
        (
            "How do I learn a new language?",
            "What's the best way to learn a language?",
            "How can I learn Spanish quickly?",
        ),
        (
            "Practice a little every day, learn the most common words first, and talk with native speakers as soon "
            "as you can. Listening to music and podcasts helps too.",
        ),
    ),
    (
        "healthy",
        ("How can I stay healthy?", "What is a healthy diet?", "How do I eat healthier?"),
        ("Eat plenty of vegetables, fruit and whole grains, drink water, move every day and get enough sleep.",),
    ),
    (
        "focus",
        ("How can I be more productive?", "How do I focus better?", "Any tips to stop procrastinating?"),
        (
            "Pick one task, put your phone away and work on it for 25 minutes, then take a short break. Small, "
            "clear goals make it easier to start.",
        ),
    ),
    (
        "plants",
        ("What do plants need to grow?", "How do plants grow?"),
        ("Plants need light, water, air and nutrients from the soil to grow.",),
    ),
)

# Concepts asked as "What is X?" in many ways: (the concept as asked, its definition).
DEFINITIONS = {
    "photosynthesis": "Photosynthesis is how plants make food. They use sunlight, water and carbon dioxide to "
    "make sugar, and they release oxygen.",
    "gravity": "Gravity is the force that pulls things toward each other. It keeps us on the ground and the "
    "Moon around the Earth.",
    "DNA": "DNA is the molecule that carries the genetic instructions of living things.",
    "an atom": "An atom is the smallest unit of a chemical element. It has a nucleus of protons and neutrons "
    "with electrons around it.",
    "a black hole": "A black hole is a region of space where gravity is so strong that not even light can escape.",
    "electricity": "Electricity is the flow of electric charge, usually electrons moving through a wire.",
    "the internet": "The internet is a global network of computers that exchange data with each other.",
    "a computer": "A computer is a machine that follows instructions, called programs, to process data.",
    "an API": "An API is a set of rules that lets one program talk to another, for example over HTTP.",
    "machine learning": "Machine learning is a way to build programs that learn patterns from data instead of "
    "following hand-written rules.",
    "a language model": "A language model predicts the next word, or token, of a text. Chat models like me are "
    "language models trained on conversations.",
    "a neural network": "A neural network is a model made of layers of simple units that learn from examples by "
    "adjusting their weights.",
    "artificial intelligence": "Artificial intelligence is the field of building computer systems that do tasks "
    "that usually need human intelligence.",
    "Llama": "Llama is a family of open large language models from Meta. Llama 3.1 and Llama 3.2 come in sizes "
    "from 1 billion to 405 billion parameters.",
    "a GGUF file": "GGUF is the file format of llama.cpp. One file holds a model's weights, its tokenizer and "
    "its chat template.",
    "llama.cpp": "llama.cpp is a fast C++ library that runs language models on ordinary CPUs and GPUs.",
    "a token": "A token is a piece of text that a language model reads or writes, often a word or part of a word.",
    "Python": "Python is a popular programming language that is easy to read and is used a lot for data and "
    "machine learning.",
    "JSON": "JSON is a simple text format for data, made of objects, lists, strings and numbers.",
    "HTTP": "HTTP is the protocol that web browsers and servers use to send requests and responses.",
    "a GPU": "A GPU is a processor made for graphics. It runs many calculations at once, which also makes it "
    "good for training neural networks.",
    "climate change": "Climate change is the long-term warming of the Earth, mostly caused by burning fossil "
    "fuels, which adds carbon dioxide to the air.",
    "democracy": "Democracy is a system of government in which people choose their leaders by voting.",
    "the Moon": "The Moon is Earth's only natural satellite. It goes around the Earth about once a month.",
    "a virus": "A virus is a tiny germ that can only make copies of itself inside the cells of a living thing.",
    "oxygen": "Oxygen is a gas that makes up about 21 percent of the air. People and animals need it to live.",
    "an ecosystem": "An ecosystem is a community of living things and the environment they share.",
    "inflation": "Inflation is the rise of prices over time, so the same money buys a little less each year.",
}
# Noun phrases for the generator's generic frames ("Tell me about {topic}.").
FACT_TOPICS = {
    "languages": ("the number of languages in the world", "world languages", "languages of the world"),
    "planets": ("the planets", "the solar system"),
    "largest_planet": ("Jupiter", "the biggest planet"),
    "moon": ("the distance to the Moon",),
    "earth_age": ("the age of the Earth",),
    "light_speed": ("the speed of light",),
    "boiling": ("the boiling point of water",),
    "sky_blue": ("the color of the sky",),
    "continents": ("the continents",),
    "oceans": ("the oceans",),
    "mountain": ("Mount Everest", "the highest mountain"),
    "river": ("the longest river", "the Nile"),
    "population": ("the world population", "the number of people on Earth"),
    "bones": ("the bones of the human body",),
    "largest_animal": ("the blue whale", "the largest animal"),
    "fastest_animal": ("the cheetah", "the fastest animal"),
    "llamas": ("llamas",),
    "romeo": ("Shakespeare",),
    "mona_lisa": ("the Mona Lisa", "Leonardo da Vinci"),
    "moon_landing": ("the Moon landing", "Neil Armstrong"),
    "learn_python": ("learning Python", "learning to code"),
    "sleep": ("sleep", "sleeping better"),
    "healthy": ("healthy food", "staying healthy"),
}

_DEFINITION_QUESTIONS = (
    "What is {x}?",
    "What's {x}?",
    "Can you explain {x}?",
    "Explain {x} in simple words.",
    "Tell me what {x} is.",
    "What does {x} mean?",
    "Define {x}.",
    "Explain {x}.",
    "I don't understand {x}. What is it?",
    "Describe {x} briefly.",
    "What exactly is {x}?",
    "Explain {x} like I'm five.",
)


def _family(
    name: str,
    table: dict[str, object],
    questions: tuple[str, ...],
    answers: tuple[str, ...],
    topics: tuple[str, ...] = (),
) -> list[Intent]:
    intents = []
    for key, value in table.items():
        article = f"{'an' if key[0] in 'aeiou' else 'a'} {key}"
        slots = {"x": key, "y": value, "a": article, "A": _capitalise(article)}
        intents.append(
            Intent(
                f"{name}:{key}",
                "facts",
                tuple(q.format(**slots).replace("..", ".") for q in questions),
                tuple(a.format(**slots).replace("..", ".") for a in answers),
                topics=tuple(t.format(**slots) for t in topics),
            )
        )
    return intents


def _capitalise(text: str) -> str:
    return text[0].upper() + text[1:]


def all_facts() -> tuple[Intent, ...]:
    """Every general-knowledge intent."""
    intents = _family(
        "capital", dict(CAPITALS), _CAPITAL_QUESTIONS + _CITY_QUESTIONS, _CAPITAL_ANSWERS, ("the capital of {x}",)
    )
    for intent in _family("language", dict(LANGUAGES), _LANGUAGE_QUESTIONS, _LANGUAGE_ANSWERS):
        intents.append(Intent(intent.name, intent.category, intent.questions, tuple(map(_capitalise, intent.answers))))
    intents += _family("legs", dict(LEGS), _LEG_QUESTIONS, _LEG_ANSWERS)
    intents += [
        Intent(f"fact:{name}", "facts", questions, answers, topics=FACT_TOPICS.get(name, ()))
        for name, questions, answers in SINGLE_FACTS
    ]
    intents += [
        Intent(
            f"define:{concept}",
            "facts",
            tuple(q.format(x=concept) for q in _DEFINITION_QUESTIONS),
            (answer,),
            topics=(concept,),
        )
        for concept, answer in DEFINITIONS.items()
    ]
    return tuple(intents)
