"""The real SD-1.5 CLIP tokenizer, built offline from the BPE vocabulary shipped in open-clip-torch.

Stable Diffusion 1.5 uses OpenAI CLIP ViT-L/14's tokenizer. Its byte-level BPE (49408 tokens: 256 byte
symbols, their end-of-word forms, 48894 merges and two special tokens) is the file
``open_clip/bpe_simple_vocab_16e6.txt.gz`` inside the open-clip-torch wheel. From it we write the
``vocab.json`` / ``merges.txt`` pair that ``CLIPTokenizer.from_pretrained`` reads. Token ids then equal
SD-1.5's exactly ("a photo of a cat" -> 49406, 320, 1125, 539, 320, 2368, 49407).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

from transformers import CLIPTokenizer

from videoedit.io.atomic import write_json, write_text
from videoedit.io.manifest import build_manifest, verify_manifest
from videoedit.paths import default_cache_root

logger = logging.getLogger(__name__)

#: written last into a tokenizer folder: every file's size and SHA-256
TOKENIZER_MANIFEST = "manifest.json"

CLIP_VOCAB_SIZE = 49408
CLIP_MAX_LENGTH = 77
_NUM_MERGES = CLIP_VOCAB_SIZE - 2 * 256 - 2  # 48894


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def open_clip_bpe_path() -> Path:
    """Path of the BPE merges file bundled with open-clip-torch."""
    import open_clip

    path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the installed open-clip-torch does not ship its BPE vocabulary. "
            "Reinstall it with `pip install -c constraints.txt open-clip-torch`."
        )
    return path


def clip_vocab_and_merges(bpe_path: Path | None = None) -> tuple[dict[str, int], list[str]]:
    """The CLIP vocabulary (token -> id) and merge list derived from the BPE file."""
    with gzip.open(bpe_path or open_clip_bpe_path()) as f:
        lines = f.read().decode("utf-8").split("\n")
    merges = lines[1 : _NUM_MERGES + 1]  # line 0 is the version header
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"derived CLIP vocabulary has {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def write_clip_tokenizer_files(folder: Path) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the tokenizer configs of SD-1.5's tokenizer, then
    :data:`TOKENIZER_MANIFEST` (their sizes and checksums, checked before each load)."""
    vocab, merges = clip_vocab_and_merges()
    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    write_text(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    write_text(folder / "special_tokens_map.json", json.dumps(special))
    config = {
        **special,
        "model_max_length": CLIP_MAX_LENGTH,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    write_text(folder / "tokenizer_config.json", json.dumps(config))
    files = ["merges.txt", "vocab.json", "special_tokens_map.json", "tokenizer_config.json"]
    write_json(folder / TOKENIZER_MANIFEST, build_manifest(folder, files))
    return folder


def _tokenizer_folder_problems(folder: Path) -> list[str]:
    try:
        manifest = json.loads((folder / TOKENIZER_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"no readable {TOKENIZER_MANIFEST}"]
    return verify_manifest(folder, manifest)


def _bpe_digest() -> str:
    return hashlib.sha256(open_clip_bpe_path().read_bytes()).hexdigest()[:16]


@lru_cache(maxsize=4)
def load_clip_tokenizer(cache_dir: str | None = None) -> CLIPTokenizer:
    """SD-1.5's CLIP tokenizer, built from open-clip's BPE file (no network).

    Args:
        cache_dir: where to keep the generated tokenizer files (``None``: ``<cache root>/tokenizer``, the
            cache root of ``configs/paths/default.yaml``: ``$VIDEOEDIT_CACHE_ROOT`` or ``~/.cache/videoedit``).
            Files that are missing or changed on disk are rewritten.

    Raises:
        RuntimeError: the loaded tokenizer does not have 49408 tokens. (``transformers`` can silently
            build a 2-token vocabulary from bad files; we never let that through.)
    """
    root = Path(cache_dir) if cache_dir else default_cache_root() / "tokenizer"
    folder = root / f"clip_tokenizer_{_bpe_digest()}"
    problems = _tokenizer_folder_problems(folder)
    if problems:
        if folder.exists():
            logger.warning("rewriting the tokenizer files in %s: %s", folder, "; ".join(problems[:3]))
        write_clip_tokenizer_files(folder)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    check_clip_tokenizer(tokenizer)
    return tokenizer


def check_clip_tokenizer(tokenizer: CLIPTokenizer) -> None:
    """Raise unless ``tokenizer`` has the full CLIP vocabulary (guards against degenerate loads)."""
    if len(tokenizer) != CLIP_VOCAB_SIZE:
        raise RuntimeError(
            f"CLIP tokenizer has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}: the tokenizer files are "
            "incomplete (an offline hub load can silently return such a tokenizer)."
        )
