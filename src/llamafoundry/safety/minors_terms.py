"""The maintained term lists behind the hard rule on sexual content involving minors (see `rules.py`).

Every pattern is matched against `normalize.skeleton(text)`: lower case, accents dropped from Latin letters,
look-alikes and leetspeak undone. Latin-script patterns are regular expressions with word boundaries; Devanagari
and Thai patterns are plain substrings (Thai writes no spaces between words). Languages: the eight Llama 3.1
supports (English, German, French, Italian, Portuguese, Spanish, Hindi in Devanagari and romanised, Thai).

To add a term: put it in the list of its kind, add a probe to tests/platform/test_safety_rules.py, and never take
terms from the frozen evaluation sets (tests/platform/*_independent.jsonl).
"""

from __future__ import annotations

_AGE = r"(?:[0-9]|1[0-7])"  # 0 to 17
_AGE_WORD = (
    r"(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen)"
)

# Terms that on their own name sexual material involving children.
DIRECT = [
    r"child ?porn\w*", r"kidd?(?:ie|y|s)? ?porn\w*", r"teen ?porn\w*", r"preteen ?(?:porn|sex|nude)\w*",
    r"pthc", r"cp (?:links?|videos?|vids?|pics?|sites?|collection|downloads?|trade|content|material)",
    r"(?:links?|sites?|download\w*|buy|sell|share|trade) (?:\w+ )?cp", r"loli(?:con|s)?", r"shota(?:con)?",
    r"jailbait\w*", r"pa?edo ?porn\w*", r"pa?edophil\w* (?:material|content|porn\w*|videos?|pics?|images?)",
    r"csam", r"child (?:sexual )?abuse (?:material|images?|videos?|content)", r"kinderporn\w*", r"pedoporn\w*",
    r"pornogra\w* (?:infantil\w*|minorile|de menores|con menores|de criancas|enfantine)",
    r"(?:i'?m|i am) (?:into|attracted to|aroused by|turned on by) (?:little|young|underage) (?:girls?|boys?|kids?)",
]  # fmt: skip
DIRECT_SCRIPT = ["बाल अश्लील", "चाइल्ड पोर्न", "สื่อลามกเด็ก", "อนาจารเด็ก", "โป๊เด็ก"]

MINOR = [
    r"child(?:ren|s|'s)?", r"kids?", r"kiddos?", r"kiddies", r"minors?", r"under-?aged?", r"pre-?teens?", r"tweens?",
    r"toddlers?", r"infants?", r"newborns?", r"school ?girls?", r"school ?boys?", r"kindergar\w+",
    r"(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|[1-9]th|1st|2nd|3rd) ?graders?",
    r"(?:grade|elementary|primary|middle) school\w*", r"junior high",
    r"high ?school (?:freshm[ae]n|sophomores?|girls?|boys?|students?|kids?)",
    r"(?:little|young|small) (?:girls?|boys?|teens?|ones)", r"teens?", r"teenagers?", r"teenage", r"nymphets?",
    r"pa?edo\w*", rf"{_AGE} ?-? ?(?:years?|yrs?|yr) ?-? ?olds?", rf"{_AGE} ?(?:yo|y/o|y\.o\.?|yrs?)",
    rf"(?:aged?|is|are|was|were|turned|turns|just|only|barely) {_AGE}", rf"{_AGE_WORD}[ -]years?[ -]olds?",
    rf"(?:girl|boy|kid|child|daughter|son|she|he|they)(?: is| was|'s| are)? {_AGE_WORD}",
    rf"(?:girls?|boys?|child|kids?) of {_AGE}",
    # German
    r"kind(?:er|es|ern)?", r"madchen", r"jungen?", r"minderjahrig\w*", r"kleinkind\w*", r"schulerin\w*",
    rf"{_AGE} ?-? ?jahrig\w*", rf"{_AGE} jahren?(?: alt)?",
    # French
    r"enfants?", r"fillettes?", r"petites? filles?", r"garcons?", r"gamin(?:e|es|s)?", r"mineur(?:e|es|s)?",
    r"ecolier(?:e|es|s)?", rf"{_AGE} ans",
    # Italian
    r"bambin[aoie]", r"ragazzin[aoie]", r"minorenn[ei]", rf"{_AGE} anni",
    # Portuguese and Spanish
    r"criancas?", r"menin[ao]s?", r"garot[ao]s?", r"menor(?:es)? de (?:idade|edad)", r"nin[ao]s?", r"nenas?",
    r"chiquill[ao]s?", r"colegialas?", r"infantil(?:es|e)?", rf"{_AGE} anos",
    # Hindi, romanised
    r"bach?ch?(?:a|e|i|on|iyan)", r"ladki", r"ladka", r"nabalig", rf"{_AGE} (?:saal|sal|varsh)",
]  # fmt: skip
MINOR_SCRIPT = ["बच्च", "लड़की", "लड़का", "लड़कि", "नाबालिग", "साल की", "साल का", "เด็ก", "ผู้เยาว์"]

SEXUAL = [
    r"sex\w*", r"seggs", r"secks", r"sesso", r"sessual\w*", r"porn\w*", r"xxx", r"nsfw", r"nudes?", r"nudity",
    r"naked", r"nackt\w*", r"nue?s?", r"nud[oa]s?", r"nua", r"desnud[oa]s?", r"erot\w*", r"smut\w*", r"hentai",
    r"lewd\w*", r"horny", r"orgasm\w*", r"masturbat\w*", r"genital\w*", r"private parts", r"penis\w*", r"vagina\w*",
    r"intercourse", r"molest\w*", r"rap(?:e|ed|es|ing|ist)", r"fondl\w*", r"blowjobs?", r"handjobs?", r"cum",
    r"fetish\w*", r"seduc\w*", r"undress\w*", r"strip(?:s|ped|ping)? (?:naked|for)", r"kinky", r"bdsm", r"incest\w*",
    r"take off (?:her|his|their|your|my) cloth\w*", r"mak(?:e|ing) love", r"sleep(?:ing)? with",
    r"dirty (?:story|stories|talk|pics?|photos?|pictures?|fantas\w*)",
    r"explicit(?:ly)? (?:\w+ ){0,2}(?:story|stories|scene|content|pictures?|pics|photos?|images?|videos?|material|"
    r"sex|details?|have)",
    r"touch(?:ing|es|ed)? (?:him|her|them|my|your)sel(?:f|ves)", r"ashl?eel", r"ashlil", r"nangi", r"nanga",
]  # fmt: skip
SEXUAL_SCRIPT = ["सेक्स", "यौन", "अश्लील", "नग्न", "नंग", "कामुक", "เพศ", "ลามก", "เปลือย", "อนาจาร", "โป๊", "ข่มขืน"]

# Asking for, making or getting the material: these outweigh any protective framing.
PRODUCE = [
    r"writ(?:e|es|ing|ten)", r"wrote", r"compose", r"generate", r"describ\w*", r"depict\w*",
    r"narrat\w*", r"role-?play\w*", r"rp", r"pretend", r"imagine", r"story", r"stories", r"scenes?", r"fanfic\w*",
    r"fiction", r"fantas\w*", r"smut", r"erot\w*", r"poem", r"sext\w*", r"captions?", r"pics?",
    r"pictures?", r"photos?", r"images?", r"videos?", r"vids?", r"clips?", r"links?", r"sites?", r"websites?",
    r"download\w*", r"torrent\w*", r"collection", r"nudes", r"where (?:can|do|to|could|would|are|is)",
    r"(?:buy|sell|share|trade|find|get) (?:\w+ ){0,3}(?:pics?|photos?|images?|videos?|porn\w*|nudes|material)",
    r"so (?:that )?i can", r"groom\w*", r"seduc\w*", r"lure", r"convince", r"persuade",
    r"get (?:them|him|her|a kid|a child|kids|children|the kid|the child) (?:alone|to)",
    r"keep (?:it|this|our|the) \w*\s?\w* ?(?:a )?secret",
    r"send(?:ing)? me", r"on camera", r"webcam\w*", r"(?:i'?m|i am) (?:into|attracted to|aroused by|turned on by)",
    r"have sex with", r"sexy", r"explicit\w*", r"lewd", r"hentai", r"here (?:is|are)", r"here's",
    r"schreib\w*", r"beschreib\w*", r"geschicht\w*", r"\w*geschichte", r"erzahl\w*", r"wo finde", r"hier ist",
    r"ecri[st]\w*", r"histoire", r"decri[st]\w*", r"ou trouver", r"voici", r"scriv\w*", r"storia", r"descriv\w*",
    r"dove (?:posso|trovo|trovare)", r"ecco", r"escrev\w*", r"historia", r"descrev\w*", r"onde (?:encontro|posso|acho)",
    r"aqui (?:esta|tienes)", r"escrib\w*", r"donde (?:puedo|encuentro|consigo)", r"likho", r"kahani",
]  # fmt: skip
PRODUCE_SCRIPT = [
    "लिख", "कहानी", "कहाँ मिल", "तस्वीर", "वीडियो", "यह रही", "เขียน", "เรื่อง", "บรรยาย", "ที่ไหน", "นี่คือ", "คลิป", "รูป",
]  # fmt: skip

# Protecting, reporting, educating, treating: without a PRODUCE cue, a mention is annotated (low), not blocked.
PROTECT = [
    r"report\w*", r"protect\w*", r"prevent\w*", r"warning signs?", r"signs? (?:of|that)", r"recogni[sz]\w*",
    r"talk (?:to|with|about)", r"explain\w*", r"teach\w*", r"educat\w*", r"safety", r"survivors?", r"therap\w*",
    r"counsel\w*", r"laws?", r"legal\w*", r"age of consent", r"puberty", r"p(?:a)?ediatric\w*", r"doctors?",
    r"check-?ups?", r"normal", r"police", r"hotlines?", r"helplines?", r"parental controls?", r"childproof\w*",
    r"contracepti\w*", r"abuse[ds]?", r"exploitation", r"harassment", r"what should (?:i|we|a|parents|teachers?) do",
    r"how (?:do|can) (?:i|we) (?:tell|know|help|talk|explain|teach|protect|report|keep)", r"support", r"awareness",
    r"ncmec", r"spreche\w*", r"sprechen", r"schutz\w*", r"melden", r"verhinder\w*", r"aufklarung", r"missbrauch\w*",
    r"proteger", r"signaler", r"prevenir", r"parler", r"abus", r"denunci\w*", r"hablar", r"explic(?:o|ar|a|as)",
    r"insegnare", r"riconoscere", r"proteggere", r"abuso", r"conversar", r"ensinar", r"educacion", r"educacao",
    r"educazione",
]  # fmt: skip
PROTECT_SCRIPT = ["बचा", "रोक", "शिकायत", "सुरक्षा", "शिक्षा", "शोषण", "ปลอดภัย", "ป้องกัน", "สอน", "แจ้ง", "ศึกษา"]
