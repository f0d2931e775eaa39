from videoedit.models.tokenizer import CLIP_VOCAB_SIZE, bytes_to_unicode, clip_vocab_and_merges


def test_vocabulary_is_sd15s(tokenizer):
    assert len(tokenizer) == CLIP_VOCAB_SIZE == 49408
    assert tokenizer.model_max_length == 77
    # ids of SD-1.5's tokenizer (openai/clip-vit-large-patch14)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer("Spiderman and Polar Bear").input_ids == [49406, 18427, 537, 12214, 4298, 49407]
    padded = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[3:] == [49407] * 74  # padded with <|endoftext|>


def test_derivation():
    vocab, merges = clip_vocab_and_merges()
    assert len(merges) == 48894
    assert len(bytes_to_unicode()) == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert vocab["cat</w>"] == 2368
