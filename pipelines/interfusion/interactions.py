"""The interactions studio understands: the words that name each, example phrasings for the sentence
encoder, and for each way of doing it (a variant) which body regions touch which object roles, the
pose kinds that suit it, which feet stand on the ground, whether the body must balance, and whether
the object is held.

A variant applies to an object that has every role its contacts name (``ObjectModel.roles``); the
first variant that applies is used (a box is held with two hands on its sides, a cup with one).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Contact:
    region: str  # a body region (``regions.REGION_NAMES``)
    role: str  # an object role ("seat", "grip", ...)


# Roles that carry the body's weight: the region rests on top of the part (its centre over it).
SUPPORT_ROLES = frozenset({"seat", "lie", "top", "step_low", "step_high", "deck", "saddle", "left_pedal", "right_pedal"})


@dataclasses.dataclass(frozen=True)
class Variant:
    contacts: tuple[Contact, ...]
    pose_kinds: tuple[str, ...]  # accepted pose kinds, preferred first
    feet_on_ground: tuple[str, ...] = ("left_sole", "right_sole")
    balance: bool = True  # centre of mass over the feet that bear weight
    holds: bool | None = False  # the object is held (True), stands on the ground (False), or as the object is (None)
    facing: str = "any"  # for an object with a front: the body faces the "same" way as it, "toward" it, or "any"
    in_front: bool = False  # for an object with a front: the body stays on its front side
    optional: tuple[Contact, ...] = ()  # contacts sought when the object has the role, weaker, not counted


@dataclasses.dataclass(frozen=True)
class Interaction:
    name: str
    phrase: str  # how the report says it
    words: tuple[str, ...]  # word forms and phrases that name it (lower case)
    examples: tuple[str, ...]  # phrasings for the sentence encoder ("something" stands for the object)
    variants: tuple[Variant, ...]

    def variant_for(self, roles) -> Variant | None:
        """The first variant whose contact roles the object has (``roles``: a container of role names)."""
        for v in self.variants:
            if all(c.role in roles for c in v.contacts):
                return v
        return None

    def objects(self, library) -> list[str]:
        """Names of the library objects this interaction applies to."""
        return [name for name, spec in library.items() if self.variant_for(spec.build(_defaults(spec)).roles) is not None]


def _defaults(spec) -> dict[str, float]:
    return {k: v[0] for k, v in spec.sizes.items()}


def _c(*pairs: tuple[str, str]) -> tuple[Contact, ...]:
    return tuple(Contact(r, p) for r, p in pairs)


_BOTH = (("left_hand", "grip_left"), ("right_hand", "grip_right"))

INTERACTIONS: dict[str, Interaction] = {
    i.name: i
    for i in (
        Interaction(
            "sit_on",
            "sit on",
            (
                "sit",
                "sits",
                "sitting",
                "sat",
                "seated",
                "perch",
                "perched",
                "perches",
                "perching",
                "take a seat",
                "takes a seat",
                "sitting down",
            ),
            ("a person sits on something", "someone is seated on it", "a person sitting down on top of something"),
            (
                Variant(
                    _c(("buttocks", "seat")),
                    ("sit",),
                    feet_on_ground=(),
                    balance=False,
                    facing="same",
                    optional=_c(("back", "backrest")),
                ),
            ),
        ),
        Interaction(
            "lie_on",
            "lie on",
            (
                "lie",
                "lies",
                "lying",
                "lay",
                "lays",
                "laying",
                "lain",
                "recline",
                "reclines",
                "reclining",
                "reclined",
                "sprawl",
                "sprawls",
                "sprawled",
                "sprawling",
                "nap",
                "naps",
                "napping",
                "sleep",
                "sleeps",
                "sleeping",
                "slept",
                "stretched out",
            ),
            ("a person lies down on something", "someone lying flat on their back on it", "a person sleeping on something"),
            (Variant(_c(("back", "lie")), ("lie",), feet_on_ground=(), balance=False, optional=_c(("head_back", "headrest"))),),
        ),  # fmt: skip
        Interaction(
            "lean_against",
            "lean against",
            (
                "lean",
                "leans",
                "leaning",
                "leaned",
                "leant",
                "slouch",
                "slouches",
                "slouching",
                "propped",
                "rests against",
                "resting against",
            ),
            ("a person leans against something", "someone leaning on it", "a person propped against something"),
            (
                Variant(_c(("back", "surface")), ("lean_back",), balance=False, facing="same", in_front=True),
                Variant(_c(("left_hand", "lean_hands"), ("right_hand", "lean_hands")), ("lean_forward",), balance=False),
            ),
        ),
        Interaction(
            "stand_on",
            "stand on",
            ("stand", "stands", "standing", "stood", "on top of", "balance", "balances", "balancing"),
            ("a person stands on top of something", "someone standing up on it"),
            (Variant(_c(("left_sole", "top"), ("right_sole", "top")), ("stand",), feet_on_ground=()),),
        ),
        Interaction(
            "step_onto",
            "step onto",
            (
                "step",
                "steps",
                "stepping",
                "stepped",
                "step up",
                "steps up",
                "stepping up",
                "step onto",
                "steps onto",
                "stepping onto",
            ),
            ("a person steps up onto something", "someone putting one foot up on it"),
            (Variant(_c(("left_sole", "step_low")), ("step",), feet_on_ground=("right_sole",), facing="toward", in_front=True),),
        ),
        Interaction(
            "hold",
            "hold",
            (
                "hold",
                "holds",
                "holding",
                "held",
                "grip",
                "grips",
                "gripping",
                "gripped",
                "grasp",
                "grasps",
                "grasping",
                "grasped",
                "clutch",
                "clutches",
                "clutching",
                "clutched",
            ),
            ("a person holds something in the hands", "someone holding it"),
            (
                Variant(_c(*_BOTH), ("hold_two", "carry_two"), holds=True),
                Variant(_c(("right_hand", "grip")), ("hold_one",), holds=True),
            ),
        ),  # fmt: skip
        Interaction(
            "carry",
            "carry",
            (
                "carry",
                "carries",
                "carrying",
                "carried",
                "tote",
                "totes",
                "toting",
                "lug",
                "lugs",
                "lugging",
                "haul",
                "hauls",
                "hauling",
            ),
            ("a person carries something", "someone carrying it around", "a person walking with something in the arms"),
            (
                Variant(_c(*_BOTH), ("carry_two", "hold_two"), holds=True),
                Variant(_c(("right_hand", "grip")), ("carry_one",), holds=True),
            ),
        ),
        Interaction(
            "lift",
            "lift",
            (
                "lift",
                "lifts",
                "lifting",
                "lifted",
                "pick up",
                "picks up",
                "picking up",
                "picked up",
                "hoist",
                "hoists",
                "hoisting",
                "hoisted",
                "heave",
                "heaves",
                "heaving",
                "raise",
                "raises",
                "raising",
            ),
            ("a person lifts something up from the floor", "someone picking it up", "a person bending down to pick something up"),
            (
                Variant(_c(*_BOTH), ("lift_two",), holds=True),
                Variant(_c(("right_hand", "grip")), ("lift_one", "carry_one"), holds=True),
            ),
        ),  # fmt: skip
        Interaction(
            "push",
            "push",
            ("push", "pushes", "pushing", "pushed", "shove", "shoves", "shoving", "shoved"),
            ("a person pushes something forward", "someone pushing it with both hands"),
            (
                Variant(
                    _c(("left_hand", "push"), ("right_hand", "push")), ("push",), balance=False, facing="toward", in_front=True
                ),
            ),
        ),
        Interaction(
            "pull",
            "pull",
            (
                "pull",
                "pulls",
                "pulling",
                "pulled",
                "drag",
                "drags",
                "dragging",
                "dragged",
                "tug",
                "tugs",
                "tugging",
                "tugged",
                "tow",
                "tows",
                "towing",
                "towed",
                "wheel",
                "wheels",
                "wheeling",
            ),
            ("a person pulls something along behind", "someone dragging it"),
            (Variant(_c(("right_hand", "pull")), ("pull",)),),
        ),  # fmt: skip
        Interaction(
            "ride",
            "ride",
            (
                "ride",
                "rides",
                "riding",
                "rode",
                "ridden",
                "cycle",
                "cycles",
                "cycling",
                "pedal",
                "pedals",
                "pedalling",
                "pedaling",
                "skate",
                "skates",
                "skating",
            ),
            ("a person rides something", "someone riding on it", "a person on a ride"),
            (
                Variant(
                    _c(
                        ("buttocks", "saddle"),
                        ("left_hand", "handlebar"),
                        ("right_hand", "handlebar"),
                        ("left_sole", "left_pedal"),
                        ("right_sole", "right_pedal"),
                    ),
                    ("ride_bike",),
                    feet_on_ground=(),
                    balance=False,
                    facing="same",
                ),
                Variant(_c(("left_sole", "deck"), ("right_sole", "deck")), ("ride_board",), feet_on_ground=()),
            ),
        ),  # fmt: skip
        Interaction(
            "kick",
            "kick",
            ("kick", "kicks", "kicking", "kicked", "boot", "boots", "booting", "booted", "punt", "punts", "punting"),
            ("a person kicks something with the foot", "someone kicking it"),
            (Variant(_c(("right_toes", "kick")), ("kick",), feet_on_ground=("left_sole",)),),
        ),
        Interaction(
            "throw",
            "throw",
            (
                "throw",
                "throws",
                "throwing",
                "threw",
                "thrown",
                "toss",
                "tosses",
                "tossing",
                "tossed",
                "hurl",
                "hurls",
                "hurling",
                "hurled",
                "pitch",
                "pitches",
                "pitching",
                "pitched",
                "fling",
                "flings",
                "flinging",
                "flung",
                "lob",
                "lobs",
                "lobbing",
            ),
            ("a person throws something", "someone tossing it through the air"),
            (Variant(_c(("right_hand", "grip")), ("throw",), holds=True),),
        ),  # fmt: skip
        Interaction(
            "hug",
            "hug",
            (
                "hug",
                "hugs",
                "hugging",
                "hugged",
                "embrace",
                "embraces",
                "embracing",
                "embraced",
                "cuddle",
                "cuddles",
                "cuddling",
                "cuddled",
                "squeeze",
                "squeezes",
                "squeezing",
            ),
            ("a person hugs something", "someone holding it tight against the chest"),
            (Variant(_c(("left_hand", "hug"), ("right_hand", "hug"), ("chest", "hug")), ("hug",), holds=True),),
        ),  # fmt: skip
        Interaction(
            "reach_for",
            "reach for",
            (
                "reach",
                "reaches",
                "reaching",
                "reached",
                "reach for",
                "reaching for",
                "reach up",
                "reaching up",
                "stretch",
                "stretches",
                "stretching",
                "stretched up",
            ),
            ("a person reaches up for something", "someone stretching an arm up to it"),
            (Variant(_c(("right_hand", "reach")), ("reach",), holds=None, facing="toward", in_front=True),),
        ),  # fmt: skip
        Interaction(
            "climb",
            "climb",
            (
                "climb",
                "climbs",
                "climbing",
                "climbed",
                "scale",
                "scales",
                "scaling",
                "ascend",
                "ascends",
                "ascending",
                "go up",
                "goes up",
                "going up",
                "walk up",
                "walks up",
                "walking up",
                "mount",
                "mounts",
                "mounting",
            ),
            ("a person climbs up something", "someone climbing it"),
            (
                Variant(
                    _c(("left_hand", "grips"), ("right_hand", "grips"), ("left_sole", "rungs"), ("right_sole", "rungs")),
                    ("climb",),
                    feet_on_ground=(),
                    balance=False,
                    facing="toward",
                    in_front=True,
                ),
                Variant(
                    _c(("left_sole", "step_high"), ("right_sole", "step_low")),
                    ("step",),
                    feet_on_ground=(),
                    facing="toward",
                    in_front=True,
                ),
            ),
        ),  # fmt: skip
        Interaction(
            "drink_from",
            "drink from",
            (
                "drink",
                "drinks",
                "drinking",
                "drank",
                "sip",
                "sips",
                "sipping",
                "sipped",
                "gulp",
                "gulps",
                "gulping",
                "swig",
                "swigging",
            ),
            ("a person drinks from something", "someone taking a sip from it"),
            (Variant(_c(("right_hand", "grip"), ("mouth", "rim")), ("drink",), holds=True),),
        ),
        Interaction(
            "sweep",
            "sweep",
            ("sweep", "sweeps", "sweeping", "swept", "mop", "mops", "mopping", "mopped"),
            ("a person sweeps the floor with something", "someone sweeping with it"),
            (Variant(_c(("left_hand", "handle"), ("right_hand", "handle")), ("sweep",)),),
        ),
        Interaction(
            "wash",
            "wash",
            (
                "wash",
                "washes",
                "washing",
                "washed",
                "clean",
                "cleans",
                "cleaning",
                "cleaned",
                "wipe",
                "wipes",
                "wiping",
                "wiped",
                "scrub",
                "scrubs",
                "scrubbing",
                "polish",
                "polishes",
                "polishing",
            ),
            ("a person wipes something clean", "someone washing it by hand"),
            (Variant(_c(("right_hand", "wipe")), ("wash",), facing="toward", in_front=True),),
        ),  # fmt: skip
        Interaction(
            "dig",
            "dig",
            ("dig", "digs", "digging", "dug", "shovel", "shovels", "shoveling", "shovelling"),
            ("a person digs with something", "someone digging a hole with it"),
            (Variant(_c(("left_hand", "handle"), ("right_hand", "handle")), ("dig",)),),
        ),
    )
}


__all__ = ["Contact", "INTERACTIONS", "Interaction", "SUPPORT_ROLES", "Variant"]
