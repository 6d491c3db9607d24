"""A built-in English sentiment lexicon, as plain data (no downloads).

Hand-written lists of common evaluative words, chosen for being clearly positive or clearly
negative on their own in reviews of films, books, music or products:

* :data:`POSITIVE` and :data:`NEGATIVE`: some 160 and 170 adjectives, so that a template such as
  "the plot was ___" reads as text; words that are often neutral in running text ("kind", "mean",
  "pretty") are left out; each list starts with its commonest words (the ``sentiment`` dataset
  may use only the first ones);
* :data:`NEGATORS`: words that, placed before a sentiment word, flip its polarity;
* :data:`INTENSIFIERS`: degree adverbs that strengthen a sentiment word without changing its sign.

Every entry is lower-case and one token of :func:`kdscope.datasets.text.tokenize` (no hyphens or
apostrophes), and the four lists are pairwise disjoint. The ``sentiment`` dataset draws its cues
from these lists; ``sst2`` uses :data:`POSITIVE` and :data:`NEGATIVE` as the default lexicon that
marks foreground words of sentence-level files.
"""

from __future__ import annotations

__all__ = ["INTENSIFIERS", "NEGATIVE", "NEGATORS", "POSITIVE"]

POSITIVE: tuple[str, ...] = (
    *("good", "great", "excellent", "wonderful", "superb", "brilliant", "delightful", "charming"),
    *("enjoyable", "fantastic", "fine", "fresh", "funny", "gorgeous", "beautiful", "lovely"),
    *("moving", "powerful", "smart", "clever", "witty", "engaging", "entertaining", "gripping"),
    *("compelling", "thoughtful", "touching", "warm", "elegant", "impressive", "memorable"),
    *("remarkable", "stunning", "terrific", "marvelous", "magnificent", "splendid", "outstanding"),
    *("pleasant", "satisfying", "solid", "sweet", "tender", "vivid", "lively", "inventive"),
    *("original", "imaginative", "creative", "intelligent", "insightful", "honest", "sincere"),
    *("heartfelt", "genuine", "authentic", "amusing", "hilarious", "playful", "joyful", "joyous"),
    *("uplifting", "inspiring", "exciting", "thrilling", "riveting", "absorbing", "fascinating"),
    *("intriguing", "captivating", "enchanting", "magical", "graceful", "polished", "refined"),
    *("assured", "confident", "skillful", "masterful", "accomplished", "ambitious", "bold"),
    *("daring", "fearless", "rewarding", "worthwhile", "valuable", "admirable", "likable"),
    *("lovable", "appealing", "attractive", "handsome", "adorable", "radiant", "dazzling"),
    *("spectacular", "breathtaking", "sublime", "perfect", "flawless", "ideal", "superior"),
    *("exceptional", "extraordinary", "phenomenal", "awesome", "cool", "nice", "happy"),
    *("cheerful", "glad", "bright", "crisp", "sharp", "deft", "nimble", "smooth", "seamless"),
    *("coherent", "balanced", "subtle", "nuanced", "wise", "gentle", "sympathetic", "generous"),
    *("friendly", "affectionate", "charismatic", "energetic", "spirited", "vibrant", "colorful"),
    *("harmonious", "soulful", "poignant", "resonant", "evocative", "fun", "beloved", "classic"),
    *("timeless", "essential", "unforgettable", "irresistible", "refreshing", "sparkling"),
    *("lyrical", "luminous", "exquisite", "stellar", "superlative", "winning"),
    *("satisfied", "pleased", "delighted", "proud", "grateful", "fabulous", "glorious", "tasteful"),
)

NEGATIVE: tuple[str, ...] = (
    *("bad", "awful", "terrible", "horrible", "dreadful", "poor", "weak", "dull", "boring"),
    *("tedious", "bland", "flat", "lifeless", "stale", "tired", "predictable", "formulaic"),
    *("clumsy", "awkward", "sloppy", "messy", "incoherent", "confusing", "pointless", "aimless"),
    *("shallow", "hollow", "empty", "thin", "trite", "banal", "silly", "stupid", "dumb"),
    *("foolish", "ridiculous", "absurd", "laughable", "pathetic", "painful", "miserable"),
    *("depressing", "gloomy", "bleak", "grim", "ugly", "hideous", "disgusting", "offensive"),
    *("crude", "vulgar", "cheap", "lazy", "sluggish", "plodding", "overlong", "bloated"),
    *("overwrought", "pretentious", "smug", "annoying", "irritating", "grating", "obnoxious"),
    *("unpleasant", "unbearable", "intolerable", "unwatchable", "forgettable", "mediocre"),
    *("inferior", "disappointing", "frustrating", "failed", "flawed", "broken", "lame", "cold"),
    *("cynical", "spiteful", "cruel", "nasty", "sour", "bitter", "harsh", "mindless", "senseless"),
    *("soulless", "joyless", "humorless", "charmless", "witless", "clueless", "inept"),
    *("incompetent", "amateurish", "unconvincing", "implausible", "contrived", "forced"),
    *("wooden", "stiff", "stilted", "muddled", "murky", "dreary", "drab", "monotonous"),
    *("repetitive", "redundant", "derivative", "unoriginal", "generic", "hackneyed", "tiresome"),
    *("exhausting", "unfunny", "insipid", "vapid", "inane", "idiotic", "worthless", "useless"),
    *("wasteful", "dismal", "abysmal", "atrocious", "appalling", "horrendous", "lousy"),
    *("rotten", "sickening", "nauseating", "tasteless", "sappy", "mawkish", "manipulative"),
    *("overbearing", "dishonest", "insincere", "shoddy", "feeble", "limp", "tepid", "lukewarm"),
    *("unhappy", "angry", "hateful", "horrid", "ghastly", "wretched", "dire", "woeful"),
    *("lackluster", "uninspired", "unimaginative", "listless", "sterile", "chaotic", "garish"),
    *("gaudy", "worst", "sad", "dumbest", "boorish", "creaky", "dated", "disjointed"),
    *("overrated", "uneven", "unfocused", "ponderous", "turgid", "numbing"),
)

NEGATORS: tuple[str, ...] = ("not", "never")

INTENSIFIERS: tuple[str, ...] = (
    *("very", "really", "truly", "quite", "extremely", "so", "rather", "deeply", "utterly"),
    "remarkably",
)
