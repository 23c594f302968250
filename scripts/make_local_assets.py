"""Make the local competition's tokenizer and tiny model config (``constants/local/``).

Writes, from a seeded synthetic corpus (no downloads):

* ``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``: a byte-level BPE tokenizer with a
  2048-token vocabulary, digits split one by one, and a ChatML-like chat template;
* ``config.json``: a tiny ``LlamaForCausalLM`` config (about 0.9M parameters) matching the tokenizer.

The corpus imitates the local network's synthetic tasks (arithmetic, reversing words, sorting, key/value
recall, counting letters). The output is deterministic: rerunning gives byte-identical files, and
``tests/constants/test_local_assets.py`` checks the committed files against it. Rerun from the repository
root with::

    .venv/bin/python scripts/make_local_assets.py [OUT_DIR]
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, PreTrainedTokenizerFast

SEED = 20240601
VOCAB_SIZE = 2048
CORPUS_SAMPLES = 20_000
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "constants" / "local"

BOS, EOS, PAD, IM_START = "<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"
SPECIAL_TOKENS = [BOS, PAD, IM_START, EOS]
"""Ids 0..3 in this order."""

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML-like; the generation prompt is ``<|im_start|>assistant\\n``."""

NOUNS = (
    "apple banana cherry grape lemon mango orange peach pear plum melon berry bread cheese butter rice soup "
    "cat dog bird fish horse mouse lion tiger bear wolf fox rabbit snake frog duck sheep cow goat whale "
    "house tree river mountain city road garden window door table chair book school island forest ocean lake "
    "water fire earth wind stone gold paper music light sound voice color shape story game picture letter "
    "time year day night week month morning evening summer winter spring autumn hour minute second "
    "people friend family mother father brother sister child teacher doctor farmer king queen student "
    "number word list value key answer question problem result order village market kitchen bridge train "
    "car boat ship plane bicycle street park hill field flower grass leaf cloud rain snow storm star moon "
    "computer phone letter pencil bottle basket box bag coat shoe hat ball song dance idea plan money price"
).split()
ADJECTIVES = (
    "red blue green yellow black white purple brown pink gray silver golden dark bright big small fast slow "
    "happy sad old new good bad hot cold long short high low easy hard early late quiet loud clean dirty "
    "strong weak young kind brave clever funny gentle heavy light rich poor simple strange sweet warm wild"
).split()
VERBS = (
    "run walk read write sing jump think remember count sort reverse find give take make tell ask know see "
    "look come go say use work play help try start stop open close move live turn keep learn add carry climb "
    "cook draw drink eat fly follow hold listen paint plant pull push sleep swim teach visit wait watch"
).split()
OTHER = (
    "the a an and or but if then when what which who how why where is are was were be been have has had "
    "do does did can could will would should may must not no yes all some many few more most other each "
    "this that these those here there it its they them their we our you your he she his her my me "
    "one two three four five six seven eight nine ten hundred thousand zero half double first last next "
    "about after again before below between during from into near over under with without along across"
).split()
WORDS = NOUNS + ADJECTIVES + VERBS

Task = Callable[[random.Random], tuple[str, str]]


def _say(rng: random.Random, phrasings: str, **fields: object) -> str:
    """One of the ``|``-separated phrasings, filled in with ``fields``."""
    return rng.choice(phrasings.split("|")).format(**fields)


def _arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    op, name, value = rng.choice(
        [("+", "sum of", a + b), ("-", "difference of", a - b), ("*", "product of", a * b)]
    )
    fields = {"a": a, "b": b, "op": op, "name": name, "value": value}
    prompt = _say(
        rng,
        "What is {a} {op} {b}?|Compute {a} {op} {b}.|Calculate: {a} {op} {b}|"
        "What is the {name} {a} and {b}?|{a} {op} {b} = ?",
        **fields,
    )
    return prompt, _say(rng, "{value}|{value}|The answer is {value}.|{a} {op} {b} = {value}", **fields)


def _reverse(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(WORDS, rng.randint(2, 7))
    prompt = _say(
        rng,
        "Reverse the order of these words: {t}|Reverse the words: {t}|"
        'Write the words in reverse order.\n{t}|Reverse "{t}".',
        t=" ".join(words),
    )
    return prompt, " ".join(reversed(words))


def _sort(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        numbers = [rng.randint(0, 999) for _ in range(rng.randint(3, 9))]
        items, ordered, kind = [str(n) for n in numbers], [str(n) for n in sorted(numbers)], "numbers"
    else:
        items = rng.sample(WORDS, rng.randint(3, 8))
        ordered, kind = sorted(items), "words"
    listed = rng.choice([", ", " ", "; "]).join(items)
    prompt = _say(
        rng,
        "Sort these {kind} in ascending order: {listed}|Sort the {kind}: {listed}|Put in order: [{listed}]",
        kind=kind,
        listed=listed,
    )
    return prompt, rng.choice([", ".join(ordered), " ".join(ordered), f"[{', '.join(ordered)}]"])


def _recall(rng: random.Random) -> tuple[str, str]:
    pairs = {key: rng.randint(0, 99) for key in rng.sample(WORDS, rng.randint(2, 6))}
    key = rng.choice(list(pairs))
    fields = {"listed": ", ".join(f"{k}={v}" for k, v in pairs.items()), "key": key, "value": pairs[key]}
    prompt = _say(
        rng,
        "Remember: {listed}. What is the value of {key}?|Here are some values: {listed}.\n"
        "What is {key}?|Memorize {listed}. Now tell me the value of {key}.",
        **fields,
    )
    return prompt, _say(rng, "{value}|{key}={value}|The value of {key} is {value}.", **fields)


def _count(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS) if rng.random() < 0.6 else " ".join(rng.sample(WORDS, 3))
    letter = rng.choice(word.replace(" ", "") if rng.random() < 0.8 else "abcdefghijklmnopqrstuvwxyz")
    fields = {"word": word, "letter": letter, "n": word.count(letter)}
    prompt = _say(
        rng,
        'How many times does the letter "{letter}" appear in "{word}"?|'
        "Count the letter {letter} in: {word}|How many {letter}'s are in the word {word}?",
        **fields,
    )
    return prompt, _say(rng, '{n}|There are {n}.|The letter "{letter}" appears {n} times.', **fields)


def _english(rng: random.Random) -> tuple[str, str]:
    noun, other, adj, verb = rng.choice(NOUNS), rng.choice(NOUNS), rng.choice(ADJECTIVES), rng.choice(VERBS)
    sentence = _say(
        rng,
        "The {adj} {noun} can {verb} near the {other}.|A {noun} is {adj} in the {other}.|"
        "My {noun} and your {other} {verb} {x} {y} day.",
        noun=noun,
        other=other,
        adj=adj,
        verb=verb,
        x=rng.choice(OTHER),
        y=rng.choice(OTHER),
    )
    return rng.choice(
        [
            (f"Write a sentence about a {noun}.", sentence),
            (f"Capitalize every word: {sentence}", sentence.title()),
            (f"Write in upper case: {noun} {other}", f"{noun} {other}".upper()),
            (f"Spell the word {noun}.", "-".join(noun)),
            (f"Is a {noun} {adj}? Answer yes or no.", rng.choice(["Yes.", "No.", "yes", "no"])),
            (f"Repeat after me: {sentence}", sentence),
        ]
    )


TASKS: tuple[Task, ...] = (_arithmetic, _reverse, _sort, _recall, _count, _english)


def corpus(samples: int = CORPUS_SAMPLES, seed: int = SEED) -> Iterator[str]:
    """Training text: seeded prompt/response pairs of every task, plus the chat role names."""
    rng = random.Random(seed)
    yield from ("system", "user", "assistant", "You are a helpful assistant.")
    for _ in range(samples):
        prompt, answer = rng.choice(TASKS)(rng)
        yield prompt
        yield answer


def train_tokenizer() -> Tokenizer:
    """Byte-level BPE; newlines and digits are always single pieces (so a chat prefix tokenizes stably)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex("\n"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return tokenizer


def model_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    """The tiny Llama shape miners start from (about 0.9M parameters)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        architectures=["LlamaForCausalLM"],
    )


KEEP = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")
"""The files of ``save_pretrained`` that are shipped (whichever of them it writes)."""


def build_assets(out_dir: Path) -> list[Path]:
    """Write the tokenizer and config into ``out_dir``; return the files written, sorted."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(),
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    written = [out_dir / "config.json"]
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in KEEP:
            (out_dir / name).unlink(missing_ok=True)
            if (Path(tmp) / name).exists():
                written.append(Path(shutil.copyfile(Path(tmp) / name, out_dir / name)))
    config = model_config(tokenizer).to_diff_dict()
    config.pop("transformers_version", None)  # so a transformers upgrade alone does not change the file
    written[0].write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return sorted(written)


def main(argv: list[str]) -> None:
    out_dir = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    for path in build_assets(out_dir):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
