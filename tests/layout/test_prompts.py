import pytest
import torch

from videoedit.errors import PromptError
from videoedit.layout.prompts import content_ids, find_token_span, locate_local_prompts, swap_span_embeddings

OFFICIAL = [
    (
        "Spiderman and Polar Bear on grass meadow before cherry trees",
        ["Spiderman", "Polar Bear", "grass meadow", "cherry trees"],
    ),
    (
        "Iron Man and Spiderman are jogging under cherry blossoms",
        ["Iron Man", "Spiderman", "cherry blossoms"],
    ),
    ("A cute pig in the autum forest", ["A cute pig", "autum forest"]),
    (
        "Spiderman and Polar Bear in sunglasses on grass meadow before cherry trees",
        ["Spiderman", "Polar Bear", "sunglasses", "grass meadow", "cherry trees"],
    ),
]


@pytest.mark.parametrize(("full", "locals_"), OFFICIAL)
def test_spans_of_official_prompts(tokenizer, full, locals_):
    layout = locate_local_prompts(tokenizer, full, locals_)
    full_ids = tokenizer(full, padding="max_length", max_length=77).input_ids
    for local, span, region in zip(locals_, layout.spans, range(len(locals_))):
        start, end = span
        assert full_ids[start:end] == content_ids(tokenizer, local)
        assert (layout.token_region[start:end] == region).all()
    assert layout.token_region[0] == -1  # SOT owned by nobody
    assert int(layout.owned.sum()) == sum(len(content_ids(tokenizer, p)) for p in locals_)


def test_exact_positions(tokenizer):
    layout = locate_local_prompts(
        tokenizer, "Spiderman and Polar Bear on grass meadow", ["Spiderman", "Polar Bear", "grass meadow"]
    )
    assert layout.spans == [(1, 2), (3, 5), (6, 8)]


def test_first_occurrence_and_empty_prompt(tokenizer):
    assert find_token_span([1, 5, 6, 5, 6], [5, 6]) == 1
    assert find_token_span([1, 2], []) is None
    layout = locate_local_prompts(tokenizer, "a cat and a dog", ["a dog", ""])
    assert layout.spans[0] == (4, 6) and layout.spans[1] is None


def test_missing_local_prompt_names_it(tokenizer):
    # 'man' is not a token of 'Spiderman' (one token): the official vis_weight config hits this silently
    with pytest.raises(
        PromptError, match=r"Local prompt 1 'man' is not part of the full prompt .*skip_missing_local_prompts"
    ):
        locate_local_prompts(tokenizer, "Spiderman and Polar Bear are jogging", ["man", "Polar Bear"])
    layout = locate_local_prompts(
        tokenizer, "Spiderman and Polar Bear are jogging", ["man", "Polar Bear"], skip_missing=True
    )
    assert layout.spans[0] is None and layout.spans[1] == (3, 5)


def _official_scan(tokenizer, full: str, local: str) -> int | None:
    """The official span search (VideoGrain's ``_prepare_attention_layout``, DenseDiffusion's loop): the
    local prompt's ``wlen`` content ids compared with ``ids[j:j+wlen]`` of the padded full prompt for every
    ``j`` in 0..76, as torch tensors; the first ``j`` where all ``wlen`` entries agree."""
    ids = torch.tensor(tokenizer(full, padding="max_length", max_length=77).input_ids)
    widx = torch.tensor(content_ids(tokenizer, local))  # ids[1 : 1 + wlen] of the local prompt
    wlen = len(widx)  # its token count without SOT/EOT (the batch's unpadded length - 2)
    for j in range(77):
        if (ids[j : j + wlen] == widx).sum() == wlen:
            return j
    return None


@pytest.mark.parametrize(
    ("local", "official"),
    [("man", "skip"), ("iron man", "skip"), ("a polar man", "crash"), ("a big iron man", "crash")],
)
def test_skip_missing_local_prompts_against_the_official_scan(tokenizer, local, official, caplog):
    """Official: a missing local prompt of 1-2 tokens is skipped silently (near the end of the 77 ids the
    1-id slice broadcasts against 2 ids), one of 3+ tokens crashes (size mismatch). Ours with
    ``skip_missing=True``: skipped with a warning at any length; by default: a PromptError."""
    full = "Spiderman and Polar Bear are jogging"
    assert len(content_ids(tokenizer, local)) == local.count(" ") + 1  # one token per word here
    if official == "skip":
        assert _official_scan(tokenizer, full, local) is None
    else:
        with pytest.raises(RuntimeError, match="must match the size"):
            _official_scan(tokenizer, full, local)
    with caplog.at_level("WARNING"):
        layout = locate_local_prompts(tokenizer, full, [local, "Polar Bear"], skip_missing=True)
    assert layout.spans == [None, (3, 5)]
    assert f"local prompt {local!r} is not part of the full prompt" in caplog.text
    with pytest.raises(PromptError, match=f"Local prompt 1 '{local}' is not part of the full prompt"):
        locate_local_prompts(tokenizer, full, [local, "Polar Bear"])


def test_span_embedding_swap():
    full = torch.arange(77 * 4, dtype=torch.float32).reshape(1, 77, 4)
    local = -torch.arange(2 * 77 * 4, dtype=torch.float32).reshape(2, 77, 4)
    out = swap_span_embeddings(full, local, [(3, 5), None])
    torch.testing.assert_close(out[0, 3:5], local[0, 1:3])
    torch.testing.assert_close(out[0, :3], full[0, :3])
    torch.testing.assert_close(out[0, 5:], full[0, 5:])
    assert not torch.equal(out, full) and torch.equal(full[0, 3], torch.arange(12, 16, dtype=torch.float32))


def test_pipeline_text_conditioning(tiny_components):
    from videoedit.pipelines.pipeline_videograin import VideoGrainPipeline

    pipe = VideoGrainPipeline.from_components(tiny_components)
    full, locals_ = OFFICIAL[0]
    emb, layout = pipe.layout_conditioning(full, locals_, negative_prompt="ugly")
    plain = pipe.encode_prompt([full])
    alone = pipe.encode_prompt(locals_)
    for i, (start, end) in enumerate(layout.spans):
        torch.testing.assert_close(emb.cond[0, start:end], alone[i, 1 : 1 + end - start])
    outside = layout.token_region < 0
    torch.testing.assert_close(emb.cond[0, outside], plain[0, outside])
    torch.testing.assert_close(emb.controlnet_cond, plain)  # the ControlNet gets the plain full prompt
    torch.testing.assert_close(emb.uncond, pipe.encode_prompt([""]))  # official: UNet uncond is ""
    torch.testing.assert_close(emb.controlnet_uncond, pipe.encode_prompt(["ugly"]))
