"""A fictional world and a probabilistic grammar that writes English documents about it.

Nothing is downloaded: every sentence is produced by a small probabilistic grammar over a fixed
fictional world (:func:`build_world`). The world has twelve invented countries, each with a
capital and a second town, a language and a famous product; twenty people, each with a home
town, a job, a pet (with a name) and a favourite colour; and twelve animals with consistent
properties. Documents (:class:`CorpusGenerator`) are encyclopedia-style profiles of people and
countries, short template stories (travel, market, lost pet, visits), quoted dialogues, counting
and arithmetic lessons (number words up to twenty), and lists of weekdays and months. Facts are
always stated consistently ("The capital of Varnia is Olmsted.") so a tiny model can learn them,
while the surrounding text varies enough to be real language modelling. The corpus is therefore
original, self-generated text that the project may ship under its own licence (Apache-2.0).

``CorpusGenerator(build_world(), random.Random(seed)).documents(n)`` is the training corpus of
the embedded ``qeval-tiny`` (``scripts/train_qeval_tiny.py``, seed 1234) and of the study's
model family (:mod:`qeval_plugins.study.training`). Pure Python: no torch, no transformers.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

#: Seed of the fictional world (who lives where, which pet, ...). Kept apart
#: from ``--seed`` so that model and task data always agree on the facts.
WORLD_SEED = 20240601

# --------------------------------------------------------------------------
# Lexicon of the fictional world. All names are invented.
# --------------------------------------------------------------------------

# fmt: off
#: (country, capital, second town, language, famous product)
COUNTRIES: list[tuple[str, str, str, str, str]] = [
    ("Varnia", "Olmsted", "Pellbrook", "Varnish", "cheese"),
    ("Dellmark", "Brisk", "Harrowby", "Dellish", "apples"),
    ("Quenland", "Tollin", "Marwick", "Quennic", "wool"),
    ("Sorvia", "Calder", "Fenwold", "Sorvic", "salt"),
    ("Talmora", "Ravel", "Dunholt", "Talmoran", "glass"),
    ("Eldwyn", "Mossgate", "Ashcombe", "Eldish", "honey"),
    ("Murvala", "Kettering", "Sedge", "Murvalan", "timber"),
    ("Pellonia", "Arden", "Wyllow", "Pellonic", "fish"),
    ("Zantor", "Greystone", "Lorrin", "Zantoric", "copper"),
    ("Arvenna", "Halberd", "Timble", "Arvennic", "silk"),
    ("Tolbrek", "Nesbury", "Orrin", "Tolbrekan", "tea"),
    ("Ostmere", "Quillon", "Brackley", "Ostmeric", "pottery"),
]
#: (name, subject pronoun, possessive pronoun)
PEOPLE: list[tuple[str, str, str]] = [
    ("Mira", "she", "her"), ("Tomas", "he", "his"), ("Elsa", "she", "her"), ("Bram", "he", "his"),
    ("Nadia", "she", "her"), ("Oskar", "he", "his"), ("Lina", "she", "her"), ("Felix", "he", "his"),
    ("Greta", "she", "her"), ("Hugo", "he", "his"), ("Ilse", "she", "her"), ("Jonas", "he", "his"),
    ("Katya", "she", "her"), ("Leon", "he", "his"), ("Maren", "she", "her"), ("Niko", "he", "his"),
    ("Petra", "she", "her"), ("Rafe", "he", "his"), ("Sanne", "she", "her"),
    ("Viktor", "he", "his"),
]
#: (animal, plural, legs, food, ability, sound)
ANIMALS: list[tuple[str, str, str, str, str, str]] = [
    ("cat", "cats", "four", "fish", "climb trees", "purrs"),
    ("dog", "dogs", "four", "bones", "fetch sticks", "barks"),
    ("otter", "otters", "four", "crabs", "swim fast", "whistles"),
    ("goat", "goats", "four", "grass", "climb rocks", "bleats"),
    ("owl", "owls", "two", "mice", "see at night", "hoots"),
    ("rabbit", "rabbits", "four", "carrots", "dig burrows", "thumps"),
    ("fox", "foxes", "four", "berries", "run quietly", "yips"),
    ("parrot", "parrots", "two", "seeds", "copy words", "squawks"),
    ("tortoise", "tortoises", "four", "lettuce", "live for a long time", "hisses"),
    ("hedgehog", "hedgehogs", "four", "beetles", "roll into a ball", "snuffles"),
    ("pony", "ponies", "four", "hay", "pull a cart", "neighs"),
    ("duck", "ducks", "two", "bread", "paddle in ponds", "quacks"),
]
COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "teal", "grey", "white", "black"]
JOBS = [
    "baker", "farmer", "teacher", "potter", "sailor", "weaver", "miller", "tailor", "painter",
    "doctor",
]
PET_NAMES = [
    "Pip", "Bumble", "Sorrel", "Nutmeg", "Juniper", "Biscuit", "Pebble", "Clover", "Tansy",
    "Marlow", "Fennel", "Basil", "Quince", "Rowan", "Thistle", "Button", "Hazel", "Sprout",
    "Crumble", "Wren",
]
NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    "twenty",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
]
TIMES = [
    "One morning", "One evening", "On a quiet afternoon", "Last winter", "In the spring",
    "Early one Monday", "On a Friday night", "Late in the autumn", "One summer day", "Yesterday",
    "A long time ago", "On the first day of May",
]
WEATHER = ["sunny", "rainy", "windy", "snowy", "foggy", "cloudy", "stormy", "warm", "cold"]
PLACES = [
    "park", "forest", "river", "garden", "harbour", "library", "orchard", "meadow", "bridge",
    "square", "mill", "hill", "lake", "bakery", "station", "school", "castle", "chapel", "tavern",
    "lighthouse", "vineyard", "quarry",
]
MARKET_ITEMS = [
    "apples", "pears", "plums", "candles", "baskets", "loaves of bread", "eggs", "lemons",
    "jars of jam", "pencils", "cups", "ribbons", "buttons", "onions", "potatoes", "carrots",
]
FOODS = [
    "soup", "bread and butter", "roast potatoes", "apple pie", "fish stew", "porridge",
    "cheese sandwiches", "pancakes", "rice with beans", "plum cake", "warm milk", "mushroom pie",
    "blackberry jam on toast", "vegetable broth", "cinnamon buns",
]
EMOTIONS = [
    "happy", "tired", "proud", "surprised", "worried", "glad", "sleepy", "excited", "calm",
    "cheerful", "grumpy", "nervous", "curious", "thankful",
]
TOPICS = [
    "the weather", "the harvest", "an old song", "the price of bread", "a new bridge",
    "their families", "the next festival", "a strange dream", "the river", "a good book",
    "the stars", "a lost key", "the old castle", "the fishing boats", "a famous painting",
]
TRAVEL_VERBS = ["walked", "rode", "travelled", "went", "drove", "sailed"]
GIFTS = [
    "a scarf", "a kite", "a lantern", "a wooden box", "a small drum", "a blue cup", "a map",
    "a hat",
]
#: passing strangers in stories; they have no fixed facts
STRANGERS = [
    "Ysolde", "Barnaby", "Corwin", "Delphine", "Eustace", "Florian", "Gwendolyn", "Horatio",
    "Isadora", "Jasper", "Leopold", "Marigold", "Ottilie", "Percival", "Rosalind", "Thaddeus",
    "Ulrika", "Wilhelmina", "Ximena", "Zebedee",
]
#: what each job does every day (stated consistently)
JOB_ACTIVITY = {
    "baker": "bakes bread before sunrise",
    "farmer": "feeds the animals and ploughs the fields",
    "teacher": "teaches the children to read and write",
    "potter": "shapes bowls and jugs from wet clay",
    "sailor": "mends the sails and checks the ropes",
    "weaver": "weaves woollen cloth on a large loom",
    "miller": "grinds wheat into flour at the mill",
    "tailor": "sews coats, shirts and trousers",
    "painter": "paints pictures of hills and rivers",
    "doctor": "visits sick people and gives them medicine",
}
TREES = ["oak", "birch", "willow", "pine", "maple", "elm", "beech", "cedar", "chestnut", "poplar"]
FLOWERS = [
    "daisies", "tulips", "roses", "poppies", "violets", "bluebells", "lilies", "sunflowers",
    "marigolds",
]
BIRDS = [
    "sparrows", "robins", "swallows", "crows", "blackbirds", "gulls", "finches", "magpies",
    "herons",
]
SCENE_ADJ = [
    "quiet", "bright", "gloomy", "peaceful", "muddy", "golden", "silver", "ancient", "narrow",
    "wide", "misty", "green", "shady", "lonely", "busy", "frozen", "gentle", "wild", "dusty",
    "shining",
]
DIRECTIONS = ["north", "south", "east", "west"]
SEASONS = ["spring", "summer", "autumn", "winter"]
ROOMS = ["kitchen", "bedroom", "attic", "cellar", "parlour", "study", "pantry", "hallway"]
FURNITURE = [
    "table", "chair", "bookshelf", "cupboard", "bed", "clock", "mirror", "rug", "stove", "bench",
    "cabinet", "lamp", "wardrobe", "chest",
]
DISHES = {
    "pancakes": ["flour", "milk", "eggs", "butter"],
    "porridge": ["oats", "milk", "honey", "salt"],
    "bean soup": ["beans", "onions", "garlic", "parsley"],
    "plum cake": ["flour", "sugar", "plums", "butter"],
    "tomato stew": ["tomatoes", "potatoes", "pepper", "garlic"],
    "rice pudding": ["rice", "cream", "sugar", "cinnamon"],
    "oat biscuits": ["oats", "butter", "raisins", "sugar"],
    "mushroom pie": ["mushrooms", "flour", "butter", "thyme"],
}
#: (thing, its colour): plain real-world knowledge for the colour lessons
THING_COLOURS = [
    ("the sky", "blue"), ("grass", "green"), ("snow", "white"), ("coal", "black"),
    ("a ripe cherry", "red"), ("a banana", "yellow"), ("a carrot", "orange"), ("a plum", "purple"),
    ("a storm cloud", "grey"), ("a lemon", "yellow"), ("a frog", "green"), ("milk", "white"),
    ("a tomato", "red"), ("the sea", "blue"), ("a crow", "black"), ("a pumpkin", "orange"),
    ("an elephant", "grey"), ("a violet", "purple"),
]
OPPOSITES = [
    ("big", "small"), ("hot", "cold"), ("fast", "slow"), ("up", "down"), ("early", "late"),
    ("heavy", "light"), ("old", "young"), ("happy", "sad"), ("open", "closed"), ("full", "empty"),
    ("loud", "quiet"), ("dark", "bright"), ("long", "short"), ("wet", "dry"), ("strong", "weak"),
    ("rich", "poor"), ("thick", "thin"), ("high", "low"), ("near", "far"), ("hard", "soft"),
]
#: the tool each job uses (stated consistently)
JOB_TOOL = {
    "baker": "an oven",
    "farmer": "a plough",
    "teacher": "a piece of chalk",
    "potter": "a spinning wheel",
    "sailor": "a compass",
    "weaver": "a loom",
    "miller": "two millstones",
    "tailor": "a needle and thread",
    "painter": "a brush",
    "doctor": "a stethoscope",
}
COOK_VERBS = ["chop", "mix", "stir", "boil", "pour", "slice", "whisk", "warm", "season", "knead"]
# fmt: on


@dataclass(frozen=True)
class Country:
    """A fictional country with its capital, second town, language and product."""

    name: str
    capital: str
    town: str
    language: str
    product: str


@dataclass(frozen=True)
class Animal:
    """An animal kind with fixed properties that the corpus states consistently."""

    name: str
    plural: str
    legs: str
    food: str
    ability: str
    sound: str


@dataclass(frozen=True)
class Person:
    """A person of the world and the facts the corpus tells about them."""

    name: str
    subj: str
    poss: str
    town: str
    country: str
    job: str
    pet: str
    pet_name: str
    colour: str


@dataclass(frozen=True)
class World:
    """The whole fictional world: countries, animals and people."""

    countries: list[Country]
    animals: list[Animal]
    people: list[Person]

    @property
    def towns(self) -> list[str]:
        """All 24 town names (capitals first)."""
        return [c.capital for c in self.countries] + [c.town for c in self.countries]

    def country_of(self, town: str) -> Country:
        """The country that ``town`` belongs to."""
        for c in self.countries:
            if town in (c.capital, c.town):
                return c
        raise KeyError(town)

    def animal(self, name: str) -> Animal:
        """The :class:`Animal` called ``name``."""
        return next(a for a in self.animals if a.name == name)


def build_world(seed: int = WORLD_SEED) -> World:
    """Assign home towns, jobs, pets and colours to the people, deterministically."""
    rng = random.Random(seed)
    countries = [Country(*row) for row in COUNTRIES]
    animals = [Animal(*row) for row in ANIMALS]
    towns = [c.capital for c in countries] + [c.town for c in countries]
    n = len(PEOPLE)

    def balanced(items: list[str], copies: int) -> list[str]:
        """``n`` draws without replacement from ``copies`` (at least) copies of ``items``."""
        return rng.sample(items * max(copies, math.ceil(n / len(items))), n)

    # balanced draws so that every town, job, colour and (almost) every animal is used
    homes = balanced(towns, 1)
    pet_names = balanced(PET_NAMES, 1)
    jobs = balanced(JOBS, 2)
    colours = balanced(COLOURS, 2)
    pets = balanced([a.name for a in animals], 2)
    people = []
    for i, (name, subj, poss) in enumerate(PEOPLE):
        home = homes[i]
        country = next(c.name for c in countries if home in (c.capital, c.town))
        people.append(
            Person(
                name=name,
                subj=subj,
                poss=poss,
                town=home,
                country=country,
                job=jobs[i],
                pet=pets[i],
                pet_name=pet_names[i],
                colour=colours[i],
            )
        )
    return World(countries=countries, animals=animals, people=people)


def article(word: str) -> str:
    """English indefinite article for ``word``."""
    return "an" if word[0] in "aeiou" else "a"


def cap(text: str) -> str:
    """Capitalise the first letter of ``text``."""
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------
# Canonical fact sentences. The facts task asks for exactly these.
# --------------------------------------------------------------------------


def fact_prompts(world: World) -> list[tuple[str, str, str]]:
    """Every learnable fact as ``(kind, context, answer)``.

    ``f"{context} {answer}."`` is exactly the sentence the corpus uses for it.
    """
    out: list[tuple[str, str, str]] = []
    for c in world.countries:
        out.append(("capital", f"The capital of {c.name} is", c.capital))
    for p in world.people:
        out.append(("town", f"{p.name} lives in", p.town))
        out.append(("pet", f"{p.name} has a pet", p.pet))
        out.append(("colour", f"{p.name}'s favourite colour is", p.colour))
        out.append(("job", f"{p.name} works as a", p.job))
    return out


class CorpusGenerator:
    """Probabilistic grammar producing documents about a :class:`World`."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng

    # -- helpers ------------------------------------------------------------
    def _person(self) -> Person:
        return self.rng.choice(self.world.people)

    def _two_people(self) -> tuple[Person, Person]:
        a, b = self.rng.sample(self.world.people, 2)
        return a, b

    def _person_facts(self, p: Person) -> list[str]:
        c = self.world.country_of(p.town)
        return [
            f"{p.name} lives in {p.town}.",
            f"{p.name} has a pet {p.pet}.",
            f"{p.name}'s favourite colour is {p.colour}.",
            f"{p.name} works as a {p.job}.",
            f"{cap(p.poss)} {p.pet} is called {p.pet_name}.",
            f"{p.town} is a town in {c.name}.",
            f"{cap(p.subj)} speaks {c.language}.",
        ]

    def _country_facts(self, c: Country) -> list[str]:
        return [
            f"The capital of {c.name} is {c.capital}.",
            f"{c.town} is a town in {c.name}.",
            f"People in {c.name} speak {c.language}.",
            f"{c.name} is famous for its {c.product}.",
            f"{c.capital} is the biggest town in {c.name}.",
        ]

    # -- document types -----------------------------------------------------
    def profile(self) -> str:
        """An encyclopedia-like entry about one person."""
        p = self._person()
        facts = self._person_facts(p)
        first, rest = facts[:4], facts[4:]
        self.rng.shuffle(first)
        extra = self.rng.sample(rest, self.rng.randint(0, len(rest)))
        intro = self.rng.choice(
            [
                f"This is {p.name}.",
                f"Let me tell you about {p.name}.",
                f"{p.name} is a {p.job}.",
                "",
            ]
        )
        return " ".join(s for s in [intro, *first, *extra] if s)

    def country(self) -> str:
        """An encyclopedia-like entry about one country."""
        c = self.rng.choice(self.world.countries)
        facts = self._country_facts(c)
        head, rest = facts[0], facts[1:]
        self.rng.shuffle(rest)
        people = [p for p in self.world.people if p.country == c.name]
        tail = []
        if people and self.rng.random() < 0.6:
            p = self.rng.choice(people)
            tail.append(f"In {c.name} you can meet {p.name}, who lives in {p.town}.")
        return " ".join([f"{c.name} is a country.", head, *rest[: self.rng.randint(1, 4)], *tail])

    def travel_story(self) -> str:
        """A short story of a trip from a person's home town to another town."""
        a, b = self._two_people()
        dest = b.town if self.rng.random() < 0.7 else self.rng.choice(self.world.towns)
        dc = self.world.country_of(dest)
        verb = self.rng.choice(TRAVEL_VERBS)
        s = [
            f"{self.rng.choice(TIMES)}, {a.name} left {a.town} and {verb} to {dest}.",
            f"The weather was {self.rng.choice(WEATHER)}.",
        ]
        if self.rng.random() < 0.5:
            s.append(f"{cap(a.subj)} took {a.poss} {a.pet}, {a.pet_name}, along.")
        if self.rng.random() < 0.4:
            far = self.rng.choice(self.world.countries).name
            who = self.rng.choice(STRANGERS)
            s.append(f"On the road {a.subj} met a traveller called {who}, who came from {far}.")
        if dest == dc.capital and self.rng.random() < 0.6:
            s.append(f"{dest} is the capital of {dc.name}.")
        if dest == b.town:
            s.append(f"In {dest}, {a.name} met {b.name}, who works as a {b.job}.")
            s.append(
                f"They talked about {self.rng.choice(TOPICS)} and ate {self.rng.choice(FOODS)}."
            )
        else:
            place = self.rng.choice(PLACES)
            s.append(f"In {dest}, {a.subj} visited the {place} and bought some {dc.product}.")
        mood = self.rng.choice(EMOTIONS)
        s.append(f"In the evening {a.name} felt {mood} and went back home to {a.town}.")
        return " ".join(s)

    def market_story(self) -> str:
        """A market story with a small, correct subtraction in it."""
        a, b = self._two_people()
        n = self.rng.randint(3, 12)
        k = self.rng.randint(1, n - 1)
        item = self.rng.choice(MARKET_ITEMS)
        colour = (
            self.rng.choice(COLOURS) + " "
            if item in ("candles", "ribbons", "buttons", "cups", "pencils", "baskets")
            else ""
        )
        return " ".join(
            [
                f"{self.rng.choice(TIMES)}, {a.name} went to the market in {a.town}.",
                f"{cap(a.subj)} bought {NUMBER_WORDS[n]} {colour}{item}.",
                f"On the way home, {a.subj} gave {NUMBER_WORDS[k]} of them to {b.name}.",
                f"Now {a.name} has {NUMBER_WORDS[n - k]} {colour}{item} left.",
                self.rng.choice(
                    [
                        f"{b.name} said thank you.",
                        f"{b.name} smiled and went back to {b.town}.",
                        f"The {a.pet} was waiting at the door.",
                        "",
                    ]
                ),
            ]
        ).strip()

    def pet_story(self) -> str:
        """A story about a person's pet running off."""
        p = self._person()
        an = self.world.animal(p.pet)
        place, place2 = self.rng.sample(PLACES, 2)
        return " ".join(
            [
                f"{p.name} has a pet {p.pet} called {p.pet_name}.",
                f"{self.rng.choice(TIMES)}, {p.pet_name} ran away from home in {p.town}.",
                f"{p.name} looked for {p.pet_name} near the {place}.",
                f"At last {p.subj} found the {p.pet} by the {place2}, eating {an.food}.",
                f"{p.name} was very {self.rng.choice(EMOTIONS)}.",
                self.rng.choice(
                    [
                        f"A {p.pet} can {an.ability}.",
                        f"Every {p.pet} likes {an.food}.",
                        f"That night the {p.pet} slept on a {p.colour} blanket.",
                        "",
                    ]
                ),
            ]
        ).strip()

    def dialogue(self) -> str:
        """A quoted conversation in which people state their own facts."""
        a, b = self._two_people()
        lines = [f"{a.name} met {b.name} at the {self.rng.choice(PLACES)}."]
        questions = [
            ("Where do you live?", f"I live in {b.town},", f"{b.name} lives in {b.town}."),
            ("What is your job?", f"I work as a {b.job},", f"{b.name} works as a {b.job}."),
            (
                "Do you have a pet?",
                f"Yes, I have a pet {b.pet} called {b.pet_name},",
                f"{b.name} has a pet {b.pet}.",
            ),
            (
                "What is your favourite colour?",
                f"My favourite colour is {b.colour},",
                f"{b.name}'s favourite colour is {b.colour}.",
            ),
        ]
        for q, ans, summary in self.rng.sample(questions, self.rng.randint(1, 3)):
            lines.append(f'"{q}" asked {a.name}.')
            lines.append(f'"{ans}" said {b.name}.')
            if self.rng.random() < 0.3:
                lines.append(f"So {summary}")
        lines.append(
            self.rng.choice(
                [f'"Goodbye," said {a.name}.', f"Then {a.name} went home to {a.town}.", ""]
            )
        )
        return " ".join(x for x in lines if x)

    def animal_facts(self) -> str:
        """General facts about a few animals."""
        out = []
        for an in self.rng.sample(self.world.animals, self.rng.randint(2, 4)):
            opts = [
                f"{cap(article(an.name))} {an.name} has {an.legs} legs.",
                f"{cap(an.plural)} like to eat {an.food}.",
                f"{cap(article(an.name))} {an.name} can {an.ability}.",
                f"The {an.name} {an.sound}.",
            ]
            out.extend(self.rng.sample(opts, self.rng.randint(1, 4)))
        return " ".join(out)

    def counting(self) -> str:
        """Counting up or down in number words, and successor sentences."""
        r = self.rng.random()
        if r < 0.45:
            start = self.rng.randint(1, 14)
            length = self.rng.randint(3, 7)
            seq = NUMBER_WORDS[start : start + length]
            lead = self.rng.choice(
                ["Count with me:", "We can count:", "Counting up:", "The numbers go"]
            )
            return f"{lead} {', '.join(seq)}."
        if r < 0.65:
            start = self.rng.randint(6, 20)
            length = self.rng.randint(3, 6)
            seq = NUMBER_WORDS[start - length + 1 : start + 1][::-1]
            return f"Counting down: {', '.join(seq)}."
        parts = []
        for _ in range(self.rng.randint(2, 4)):
            n = self.rng.randint(1, 19)
            if self.rng.random() < 0.5:
                parts.append(f"After {NUMBER_WORDS[n]} comes {NUMBER_WORDS[n + 1]}.")
            else:
                parts.append(f"Before {NUMBER_WORDS[n]} comes {NUMBER_WORDS[n - 1]}.")
        return " ".join(parts)

    def arithmetic(self) -> str:
        """A small lesson of sums and differences with number words."""
        lines = [
            self.rng.choice(
                ["Here are some sums.", "A lesson in numbers.", "Let us do some sums.", ""]
            )
        ]
        for _ in range(self.rng.randint(2, 5)):
            if self.rng.random() < 0.6:
                a = self.rng.randint(0, 10)
                b = self.rng.randint(0, 10)
                lines.append(
                    f"{cap(NUMBER_WORDS[a])} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}."
                )
            else:
                a = self.rng.randint(1, 20)
                b = self.rng.randint(0, min(a, 10))
                lines.append(
                    f"{cap(NUMBER_WORDS[a])} minus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a - b]}."
                )
        return "\n".join(x for x in lines if x)

    def calendar(self) -> str:
        """Weekday and month sequences."""
        if self.rng.random() < 0.5:
            i = self.rng.randrange(7)
            nxt = WEEKDAYS[(i + 1) % 7]
            return self.rng.choice(
                [
                    f"The days of the week are {', '.join(WEEKDAYS[:-1])} and {WEEKDAYS[-1]}.",
                    f"After {WEEKDAYS[i]} comes {nxt}.",
                    f"Today is {WEEKDAYS[i]}, so tomorrow is {nxt}.",
                ]
            )
        i = self.rng.randrange(12)
        nxt = MONTHS[(i + 1) % 12]
        return self.rng.choice(
            [
                f"The year begins with {MONTHS[0]} and ends with {MONTHS[-1]}.",
                f"After {MONTHS[i]} comes {nxt}.",
                f"This month is {MONTHS[i]}, so next month is {nxt}.",
            ]
        )

    def gift_story(self) -> str:
        """A story about a birthday gift that uses the receiver's favourite colour."""
        a, b = self._two_people()
        gift = self.rng.choice(GIFTS)
        return " ".join(
            [
                f"It was {b.name}'s birthday in {self.rng.choice(MONTHS)}.",
                f"{a.name} knew that {b.name}'s favourite colour is {b.colour}.",
                f"So {a.subj} painted {gift} {b.colour} and took it to {b.town}.",
                f"{b.name} was {self.rng.choice(EMOTIONS)} and put it next to {b.poss} {b.pet}.",
            ]
        )

    def work_day(self) -> str:
        """A person's working day, consistent with their job."""
        p = self._person()
        day = self.rng.choice(WEEKDAYS[:5])
        return " ".join(
            [
                f"{p.name} works as a {p.job}.",
                f"Every {day}, {p.subj} {JOB_ACTIVITY[p.job]}.",
                self.rng.choice(
                    [
                        f"At noon {p.subj} eats {self.rng.choice(FOODS)}.",
                        f"{cap(p.poss)} {p.pet} watches from the window.",
                        f"The people of {p.town} say {p.subj} is a good {p.job}.",
                        f"For this work {p.subj} needs {JOB_TOOL[p.job]}.",
                    ]
                ),
                f"In the evening {p.name} is {self.rng.choice(EMOTIONS)}.",
            ]
        )

    def scene(self) -> str:
        """A short nature description."""
        adj1, adj2 = self.rng.sample(SCENE_ADJ, 2)
        town = self.rng.choice(self.world.towns)
        return " ".join(
            [
                f"Near {town} there is a {adj1} {self.rng.choice(PLACES)}.",
                f"Tall {self.rng.choice(TREES)} trees grow beside a {adj2} stream.",
                f"In {self.rng.choice(SEASONS)} the ground is full of {self.rng.choice(FLOWERS)},",
                f"and {self.rng.choice(BIRDS)} sing in the branches.",
                self.rng.choice(
                    [
                        "It is a good place for a walk.",
                        "Few people go there.",
                        "Children like to play there.",
                        "",
                    ]
                ),
            ]
        ).strip()

    def weather_report(self) -> str:
        """A weather report for one country."""
        c = self.rng.choice(self.world.countries)
        w1, w2 = self.rng.sample(WEATHER, 2)
        return " ".join(
            [
                f"The weather in {c.name} today.",
                f"In {c.capital} it will be {w1} in the morning and {w2} in the evening.",
                f"The wind will blow from the {self.rng.choice(DIRECTIONS)}.",
                self.rng.choice(
                    [
                        f"It is a typical day for {self.rng.choice(SEASONS)}.",
                        f"Farmers near {c.town} hope for rain.",
                        "",
                    ]
                ),
            ]
        ).strip()

    def house(self) -> str:
        """A description of a person's house."""
        p = self._person()
        rooms = self.rng.sample(ROOMS, self.rng.randint(2, 3))
        n = self.rng.randint(3, 9)
        parts = [f"{p.name}'s house in {p.town} has {NUMBER_WORDS[n]} rooms."]
        for room in rooms:
            f1, f2 = self.rng.sample(FURNITURE, 2)
            parts.append(f"In the {room} there is {article(f1)} {f1} and {article(f2)} {f2}.")
        parts.append(
            f"The walls are painted {p.colour}, because {p.colour} is {p.poss} favourite colour."
        )
        return " ".join(parts)

    def recipe(self) -> str:
        """A tiny recipe."""
        dish, ingredients = self.rng.choice(list(DISHES.items()))
        v1, v2 = self.rng.sample(COOK_VERBS, 2)
        a, b, c, d = ingredients
        return " ".join(
            [
                f"To make {dish}, you need {a}, {b}, {c} and {d}.",
                f"First {v1} the {a}.",
                f"Then {v2} the {b} and add the {c}.",
                f"Cook it for {NUMBER_WORDS[self.rng.randint(5, 20)]} minutes.",
                self.rng.choice(
                    [
                        f"{self._person().name} likes {dish} very much.",
                        "It tastes best when it is warm.",
                        "",
                    ]
                ),
            ]
        ).strip()

    def lesson(self) -> str:
        """A school lesson: colours of things, opposites, or the tools of a job."""
        r = self.rng.random()
        if r < 0.4:
            items = self.rng.sample(THING_COLOURS, self.rng.randint(2, 4))
            return "Colours. " + " ".join(f"{cap(t)} is {c}." for t, c in items)
        if r < 0.8:
            pairs = self.rng.sample(OPPOSITES, self.rng.randint(2, 4))
            return "Opposites. " + " ".join(f"The opposite of {a} is {b}." for a, b in pairs)
        jobs = self.rng.sample(JOBS, self.rng.randint(2, 3))
        return " ".join(f"{cap(article(j))} {j} uses {JOB_TOOL[j]}." for j in jobs)

    #: document kinds and their relative weights
    KINDS: tuple[tuple[str, float], ...] = (
        ("profile", 0.20),
        ("country", 0.09),
        ("travel_story", 0.10),
        ("market_story", 0.06),
        ("pet_story", 0.07),
        ("dialogue", 0.08),
        ("animal_facts", 0.05),
        ("counting", 0.07),
        ("arithmetic", 0.07),
        ("calendar", 0.03),
        ("gift_story", 0.04),
        ("work_day", 0.04),
        ("scene", 0.04),
        ("weather_report", 0.02),
        ("house", 0.02),
        ("recipe", 0.02),
        ("lesson", 0.03),
    )

    def document(self) -> str:
        """One document: a paragraph made of one to three generated pieces."""
        names = [k for k, _ in self.KINDS]
        weights = [w for _, w in self.KINDS]
        n_parts = self.rng.choice([1, 1, 2, 2, 3])
        parts = [getattr(self, k)() for k in self.rng.choices(names, weights, k=n_parts)]
        return "\n".join(parts)

    def documents(self, n: int) -> list[str]:
        """``n`` documents."""
        return [self.document() for _ in range(n)]
