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


def test_files_live_under_the_cache_root_and_are_rewritten_when_changed(tmp_path, monkeypatch, caplog):
    import tempfile

    from tests.corruption import flip_byte
    from videoedit.models.tokenizer import TOKENIZER_MANIFEST, load_clip_tokenizer

    monkeypatch.setenv("VIDEOEDIT_CACHE_ROOT", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmpdir"))  # $TMPDIR must stay untouched
    load_clip_tokenizer.cache_clear()
    try:
        tokenizer = load_clip_tokenizer()  # default: <cache root>/tokenizer, as configs/paths
        (folder,) = (tmp_path / "cache" / "tokenizer").iterdir()
        assert len(tokenizer) == CLIP_VOCAB_SIZE and (folder / TOKENIZER_MANIFEST).is_file()
        assert not (tmp_path / "tmpdir").exists()
        vocab = (folder / "vocab.json").read_bytes()
        flip_byte(folder / "vocab.json", 1000)  # same size, one token's spelling changed
        load_clip_tokenizer.cache_clear()
        again = load_clip_tokenizer()
        assert "rewriting the tokenizer files" in caplog.text and "vocab.json was changed" in caplog.text
        assert (folder / "vocab.json").read_bytes() == vocab
        assert again("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    finally:
        load_clip_tokenizer.cache_clear()
