"""The render stage on Ray: a tiny random generator, ~50 sources x 7 deltas, local and S3."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from headrot import storage, tables
from headrot.stages.fit import FitConfig, run_fit
from headrot.stages.render import METHODS, RenderConfig, TrajectoryIndex, run_render
from tests.test_fit_stage import planted_rows, write_latents

pytestmark = pytest.mark.slow

DELTAS = (-30, -20, -10, 0, 10, 20, 30)
N_SOURCES = 50


def make_run(root: str) -> pa.Table:
    """latents (3 files x 30 rows), trajectories, and a tiny random generator under `root`."""
    import torch

    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    table = planted_rows(n=90, seed=3)
    write_latents(root, table, n_files=3)
    run_fit(FitConfig(root=root, attributes=("Male",), min_images=10, min_bins=2))
    torch.manual_seed(0)
    config = PRESETS["tiny"]
    save_model(storage.join(root, "checkpoints", "generator", "model.pt"), "generator", UNet(config), config)
    return table


def read_rotated(out_dir: str) -> pa.Table:
    return pa.concat_tables([tables.read_parquet(f) for f in storage.list_files(out_dir, ".parquet")])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_render_every_source_delta_once_and_resumes(ray_cluster, tmp_path, request, where):
    root = str(tmp_path / "run") if where == "local" else request.getfixturevalue("s3_bucket") + "/run"
    make_run(root)
    # Local: every method, 3 DDIM steps (the counts do not depend on steps; 2 cores are slow);
    # S3: the default method at the paper's 10 steps.
    methods = METHODS if where == "local" else ("headrot",)
    config = RenderConfig(root=root, deltas=DELTAS, split="all", limit=N_SOURCES, methods=methods,
                          batch_size=64, steps=3 if where == "local" else 10,
                          format="png" if where == "local" else "parquet")
    summary = run_render(config)
    print("render summary:", {k: v for k, v in summary.items() if k != "fingerprint"})
    out_dir = storage.join(root, "rotated")
    assert summary["shards"] == 2 and summary["sources"] == N_SOURCES  # 30 + 20: limit cuts file 2
    assert summary["renders"] == N_SOURCES * len(DELTAS) * len(methods)
    assert 0 < summary["model_busy_fraction"] <= 1       # the pool's model time over its wall time

    rotated = read_rotated(out_dir)
    files = storage.list_files(storage.join(root, "latents"), ".parquet")
    expected_ids = [i for f in files[:2] for i in tables.read_parquet(f, ["image_id"]).column(0).to_pylist()]
    expected_ids = expected_ids[:N_SOURCES]  # split "all", limit 50: 30 of file 0, then 20 of file 1
    triples = Counter(zip(rotated.column("source_id").to_pylist(), rotated.column("method").to_pylist(),
                          rotated.column("delta").to_pylist()))
    assert set(triples.values()) == {1}
    assert {(s, m, d) for s, m, d in triples} == {(s, m, d) for s in sorted(set(rotated.column("source_id").to_pylist()))
                                                  for m in methods for d in DELTAS}
    assert {s for s, _, _ in triples} == set(expected_ids)
    assert rotated.schema.field("delta").type == pa.int16()
    assert set(rotated.column("fallback").to_pylist()) <= {"none"} | {
        f for f in rotated.column("fallback").to_pylist() if f.startswith(("drop:", "left:"))}
    np.testing.assert_allclose(rotated.column("target_yaw").to_numpy(),
                               rotated.column("yaw").to_numpy() + rotated.column("delta").to_numpy(), atol=1e-4)

    # The delta-0 render is the reconstruction for every method (z does not move).
    if where == "local":
        zero = rotated.filter(pa.compute.equal(rotated.column("delta"), 0))
        by_source: dict[str, set] = {}
        for sid, img in zip(zero.column("source_id").to_pylist(), zero.column("image").to_pylist()):
            by_source.setdefault(sid, set()).add(img["bytes"])
        assert all(len(v) == 1 for v in by_source.values())
        files = storage.list_files(out_dir, ".parquet")
        import datasets

        ds = datasets.load_dataset("parquet", data_files=files, split="train")
        assert len(ds) == summary["renders"]
        first = ds[0]
        assert first["image"].size == (16, 16) and first["image"].mode == "RGB"
        assert isinstance(first["delta"], int) and first["source_id"] in expected_ids
        pngs = storage.list_files(storage.join(out_dir, "images"), ".png")
        assert len(pngs) == summary["renders"]
        from PIL import Image

        sheet = Image.open(io.BytesIO(storage.read_bytes(storage.join(root, "report", "contact_sheet_headrot.png"))))
        assert sheet.size[0] > 8 * 16 and sheet.size[1] > 2 * 16

    # Rerun: complete with the same fingerprint -> nothing to do.
    again = run_render(config)
    assert again.get("skipped") is True

    if where == "s3":
        return  # resuming is storage-independent; each S3 call costs ~0.5 s here, so test it locally
    # One output lost -> only that shard is rendered again.
    lost = storage.list_files(out_dir, ".parquet")[1]
    fs, path = storage.filesystem(lost)
    fs.rm(path)
    redo = run_render(config)
    assert redo["shards_this_run"] == 1 and redo["renders"] == summary["renders"]
    assert read_rotated(out_dir).num_rows == summary["renders"]


def test_trajectory_index_walks_absent_groups(ray_cluster, tmp_path):
    """A source whose group the fit never saw uses the nearest coarser group, and says so."""
    root = str(tmp_path / "run")
    table = planted_rows(n=200, seed=1)
    table = table.set_column(table.schema.get_field_index("light"), "light",
                             pa.array(["left"] * table.num_rows, pa.string()))
    write_latents(root, table, n_files=1)
    run_fit(FitConfig(root=root, attributes=("Male",), min_images=10, min_bins=2))
    index = TrajectoryIndex(tables.read_parquet(storage.join(root, "trajectories", "trajectories.parquet")), ("Male",))
    _, fallback, key = index.resolve("light_conditioned", "left", "left", (True,))
    assert fallback == "none" and key == "light_conditioned/left|Male=1"
    _, fallback, key = index.resolve("light_conditioned", "left", "center", (True,))
    assert fallback == "drop:Male,light" and key == "light_conditioned/any|"


def test_render_actor_is_callable_without_ray(tmp_path):
    """The model actor is built from its config alone and renders a shard in this process."""
    from headrot.stages.render import RenderShards

    root = str(tmp_path / "run")
    make_run(root)
    config = RenderConfig(root=root, deltas=(-10, 0, 10), split="all", methods=("headrot", "no_move"), steps=2)
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]
    out = RenderShards(config)({"latents_uri": [latents], "take": [4], "shard": ["part-00000"]})
    n, size = int(out["n"][0]), int(out["size"][0])
    assert n == 4 * 2 * 3 and size == 16
    assert len(out["images"][0]) == n * size * size * 3
    meta = tables.from_ipc(out["meta"][0])
    assert Counter(meta.column("method").to_pylist()) == {"headrot": 12, "no_move": 12}
    assert sorted(set(meta.column("delta").to_pylist())) == [-10, 0, 10]


@pytest.mark.parametrize("colour_map", ["transport", "linear"])
def test_colour_methods_get_the_unmoved_renders_colours(tmp_path, colour_map):
    """-colour without the source images (no render.data): each render mapped onto its source's
    unmoved render G(z) by the configured map (headrot.colour), after the move and before anything
    reads it; the plain method's renders are otherwise the same."""
    from headrot.colour import keep_colours, transport_colours
    from headrot.stages.render import RenderShards

    root = str(tmp_path / "run")
    make_run(root)
    methods = ("embeddings", "embeddings-colour", "no_move")
    config = RenderConfig(root=root, deltas=(-10, 0, 10), split="all", methods=methods, steps=2,
                          colour_map=colour_map)
    mapped = transport_colours if colour_map == "transport" else keep_colours
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]
    out = RenderShards(config)({"latents_uri": [latents], "take": [4], "shard": ["part-00000"]})
    n, size = int(out["n"][0]), int(out["size"][0])
    images = np.frombuffer(out["images"][0], np.uint8).reshape(n, size, size, 3)
    meta = tables.from_ipc(out["meta"][0])
    method = np.array(meta.column("method").to_pylist())
    delta = meta.column("delta").to_numpy()
    unmoved = images[(method == "no_move") & (delta == 0)]          # G(z), one per source
    for d in (-10, 10):
        plain = images[(method == "embeddings") & (delta == d)]
        kept = images[(method == "embeddings-colour") & (delta == d)]
        assert not np.array_equal(plain, kept)
        # The same map as headrot.colour on the plain render (a decode in another batch can differ
        # by one level here and there, hence the tolerance).
        assert np.abs(kept.astype(int) - mapped(plain, unmoved).astype(int)).mean() < 0.5
        # Closer to G(z)'s colours than the plain move (exact moments are the unit tests' job: this
        # untrained generator's saturated renders clip at 0 and 255).
        mean = lambda x: x.reshape(len(x), -1, 3).mean(1)
        assert np.abs(mean(kept) - mean(unmoved)).mean() < np.abs(mean(plain) - mean(unmoved)).mean()


def test_local_edit_step_is_checked_against_the_sampler():
    """The move point must lie on the render's own path, and the Jacobian must run on it."""
    RenderConfig(root="r", steps=10, local_edit_step=3)
    for bad in (-1, 10):
        with pytest.raises(ValueError, match="local_edit_step"):
            RenderConfig(root="r", steps=10, local_edit_step=bad)
    with pytest.raises(ValueError, match="local_jacobian_steps"):
        RenderConfig(root="r", steps=10, local_edit_step=3, local_jacobian_steps=5)
    RenderConfig(root="r", steps=10, local_edit_step=3, local_jacobian_steps=10)


def test_local_keep_names_regions():
    RenderConfig(root="r", local_keep=("image", "hair"))
    RenderConfig(root="r", local_keep=())
    with pytest.raises(ValueError, match="local_keep"):
        RenderConfig(root="r", local_keep=("image", "ears"))


def test_max_novel_colour_is_a_share_and_its_guard_refuses_a_blotch():
    from headrot.stages.render import RenderShards

    RenderConfig(root="r", max_novel_colour=0.03)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="max_novel_colour"):
            RenderConfig(root="r", max_novel_colour=bad)
    with pytest.raises(ValueError, match="novel_colour_tau"):
        RenderConfig(root="r", novel_colour_tau=0.0)
    # The guard on its own, as the actor builds it (no model needed): base [N], images [2N].
    shards = RenderShards.__new__(RenderShards)
    shards.config = RenderConfig(root="r", max_novel_colour=0.03)
    base = np.zeros((2, 16, 16, 3), np.uint8)
    base[:, :, 8:] = 200
    blotched = base.copy()
    blotched[1, 2:8, 2:8] = (0, 0, 255)          # 36 of 256 pixels: 14% new
    valid = shards.novel_guard(base, repeats=2)(np.concatenate([base, blotched]))
    assert valid.tolist() == [True, True, True, False]
    assert RenderShards.both(None, None) is None
    assert RenderShards.both(np.array([True, False]), None).tolist() == [True, False]
    assert RenderShards.both(np.array([True, True]), np.array([False, True])).tolist() == [False, True]
    shards.config = RenderConfig(root="r")
    assert shards.novel_guard(base) is None      # off by default


def yaw_run(tmp_path) -> tuple[str, str, str]:
    """make_run's root, a CelebA-layout folder with an image for each latents row, and a tiny
    yaw-conditioned generator whose yaw input and output are not zero: (root, data, checkpoint)."""
    import dataclasses

    import torch
    from PIL import Image

    from headrot.model.checkpoint import save_model
    from headrot.model.unet import PRESETS, UNet

    root, data = str(tmp_path / "run"), tmp_path / "data"
    table = make_run(root)
    (data / "img_align_celeba").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for image_id in table.column("image_id").to_pylist():
        Image.fromarray(rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)).save(data / "img_align_celeba" / image_id)
    config = dataclasses.replace(PRESETS["tiny"], yaw_harmonics=4, zero_init_output=False)
    torch.manual_seed(1)
    net = UNet(config)
    torch.nn.init.normal_(net.yaw_in.weight)
    ckpt = str(tmp_path / "generator_yaw.pt")
    save_model(ckpt, "generator", net, config)
    return root, str(data), ckpt


def test_the_yaw_method_inverts_each_source_under_its_yaw_and_draws_it_at_yaw_plus_delta(tmp_path):
    """yaw: no latent moves; the conditional generator inverts the source's image under the source's
    yaw and draws that inversion at yaw + delta (delta 0: its own reconstruction, not G(z));
    yaw-colour gives each render its source image's colours (render.data known: colour_reference
    auto is the source; colour_map transport), while it is drawn (the first colour_guidance_steps
    x_0 estimates) and after."""
    import torch

    from headrot.colour import transport_colours
    from headrot.data.images import decode_face
    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8
    from headrot.stages.render import RenderShards, calls_per_render

    root, data, ckpt = yaw_run(tmp_path)
    deltas = (-20, 0, 20)
    config = RenderConfig(root=root, deltas=deltas, split="all", methods=("yaw", "yaw-colour", "no_move"), steps=2,
                          data=data, yaw_generator=ckpt, colour_guidance_steps=1)
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]
    out = RenderShards(config)({"latents_uri": [latents], "take": [3], "shard": ["part-00000"]})
    n, size = int(out["n"][0]), int(out["size"][0])
    images = np.frombuffer(out["images"][0], np.uint8).reshape(n, size, size, 3)
    meta = tables.from_ipc(out["meta"][0])
    method, delta = np.array(meta.column("method").to_pylist()), meta.column("delta").to_numpy()
    assert set(meta.filter(pa.array(method == "yaw")).column("trajectory_key").to_pylist()) == {"yaw"}

    source = tables.read_parquet(latents).slice(0, 3)
    yaw = torch.from_numpy(source.column("yaw").to_numpy().astype(np.float32))
    x = np.stack([decode_face((tmp_path / "data" / "img_align_celeba" / i).read_bytes(), size)
                  for i in source.column("image_id").to_pylist()])
    net, _, _ = load_model(ckpt, "generator")
    with torch.no_grad():
        z = ddim_inversion(at_yaw(net, yaw), torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1, 2, None, 5, 2)
        expected = {d: to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 2)) for d in deltas}

        def onto_sources(x0):   # the first step's x_0 estimate given the source images' colours
            return torch.from_numpy(transport_colours(to_uint8(x0), x)).permute(0, 3, 1, 2).float() / 127.5 - 1

        guided = {d: to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 2, guide=onto_sources, guide_steps=1))
                  for d in deltas}
    for d in deltas:
        got = images[(method == "yaw") & (delta == d)]
        assert np.abs(got.astype(int) - expected[d].astype(int)).max() <= 1
        kept = images[(method == "yaw-colour") & (delta == d)]
        if d != 0:
            assert np.abs(kept.astype(int) - transport_colours(guided[d], x).astype(int)).mean() < 0.5
            assert np.abs(guided[d].astype(int) - expected[d].astype(int)).mean() > 1   # the guide did something
        else:   # the unmoved reconstruction (drawn unguided), mapped onto the source as the turns are
            assert np.abs(kept.astype(int) - transport_colours(expected[0], x).astype(int)).mean() < 0.5
            assert np.abs(kept.astype(int) - expected[0].astype(int)).mean() > 1
    assert not np.array_equal(expected[-20], expected[20])
    # Its zero is its own reconstruction, not the plain generator's G(z).
    assert not np.array_equal(images[(method == "yaw") & (delta == 0)], images[(method == "no_move") & (delta == 0)])
    # Cost: the inversion's 32 calls at 2 steps are (5 + 1 * 3) / 2 decodes, then one per delta.
    assert calls_per_render(config)["yaw"] == round((4 + 1 + 2) / 3, 3)


def test_the_yaw_method_can_invert_with_regularised_noise(tmp_path):
    """inversion_regularization: each source inverted with its noise predictions kept white
    (headrot.model.noise_regularization, at that strength), then drawn as before; the same face
    alone in its shard gets the same renders."""
    import torch

    from headrot.data.images import decode_face
    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.noise_regularization import regularized
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8
    from headrot.stages.render import RenderShards

    with pytest.raises(ValueError, match="inversion_regularization"):
        RenderConfig(root="r", methods=("yaw",), inversion_regularization=-1.0)
    root, data, ckpt = yaw_run(tmp_path)
    config = RenderConfig(root=root, deltas=(-20, 0, 20), split="all", methods=("yaw",), steps=2, data=data,
                          yaw_generator=ckpt, inversion_regularization=1.0)
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]

    def rendered(take):
        out = RenderShards(config)({"latents_uri": [latents], "take": [take], "shard": ["part-00000"]})
        n, size = int(out["n"][0]), int(out["size"][0])
        meta = tables.from_ipc(out["meta"][0])
        return (np.frombuffer(out["images"][0], np.uint8).reshape(n, size, size, 3), meta.column("delta").to_numpy(),
                np.array(meta.column("source_id").to_pylist()))

    images, delta, ids = rendered(3)
    source = tables.read_parquet(latents).slice(0, 3)
    net, model_config, _ = load_model(ckpt, "generator")
    size = model_config.image_size
    yaw = torch.from_numpy(source.column("yaw").to_numpy().astype(np.float32))
    x = torch.from_numpy(np.stack([decode_face((tmp_path / "data" / "img_align_celeba" / i).read_bytes(), size)
                                   for i in source.column("image_id").to_pylist()])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        z = ddim_inversion(regularized(at_yaw(net, yaw), seed=0, strength=1.0), x / 127.5 - 1, 2, None, 5, 2)
        plain = ddim_inversion(at_yaw(net, yaw), x / 127.5 - 1, 2, None, 5, 2)
        for d in (-20, 0, 20):
            expected = to_uint8(reverse_diffusion(at_yaw(net, yaw + d), z, 2))
            assert np.abs(images[delta == d].astype(int) - expected.astype(int)).max() <= 1
    assert (z - plain).abs().mean() > 1e-3   # the regularisation moved the latents
    alone, _, alone_ids = rendered(1)
    assert np.array_equal(alone, images[ids == alone_ids[0]])


def test_pivotal_tuning_draws_each_source_with_its_own_tuned_copy_of_the_yaw_generator(tmp_path):
    """pivotal_steps: the untuned generator's inversion is each source's pivot; a copy tuned on that
    source alone (seeded by its image id) draws its unmoved render and its turns, so a face's renders
    are those of its tuning by hand, and do not depend on which other faces share its shard."""
    import zlib

    import torch

    from headrot.data.images import decode_face
    from headrot.model.checkpoint import load_model
    from headrot.model.conditioning import at_yaw
    from headrot.model.pivotal import tune_on_source
    from headrot.model.sampler import ddim_inversion, reverse_diffusion
    from headrot.report.grid import to_uint8
    from headrot.colour import transport_colours
    from headrot.stages.render import PIVOTAL_BATCH, RenderShards, calls_per_render

    root, data, ckpt = yaw_run(tmp_path)
    deltas = (-20, 0, 20)
    config = RenderConfig(root=root, deltas=deltas, split="all", methods=("yaw", "yaw-colour", "no_move"), steps=2,
                          data=data, yaw_generator=ckpt, pivotal_steps=3, pivotal_lr=1e-3)
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]

    def rendered(take):
        out = RenderShards(config)({"latents_uri": [latents], "take": [take], "shard": ["part-00000"]})
        n, size = int(out["n"][0]), int(out["size"][0])
        meta = tables.from_ipc(out["meta"][0])
        return np.frombuffer(out["images"][0], np.uint8).reshape(n, size, size, 3), meta

    images, meta = rendered(2)
    method, delta, ids = (np.array(meta.column(c).to_pylist()) for c in ("method", "delta", "source_id"))
    source = tables.read_parquet(latents).slice(0, 2)
    net, model_config, _ = load_model(ckpt, "generator")
    size = model_config.image_size
    untuned_differs = []
    ids_in = source.column("image_id").to_pylist()
    yaws = source.column("yaw").to_numpy()   # float64, as the actor adds its deltas
    x = torch.from_numpy(np.stack([decode_face((tmp_path / "data" / "img_align_celeba" / i).read_bytes(), size)
                                   for i in ids_in])).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():   # the pivots: the untuned generator's inversions, one batch as the actor makes them
        z = ddim_inversion(at_yaw(net, torch.from_numpy(yaws)), x, 2, None, 5, 2)
    for k, image_id in enumerate(ids_in):
        yaw = float(yaws[k])
        tuned = tune_on_source(net, x[k], z[k], yaw, 3, 1e-3, seed=zlib.crc32(image_id.encode()), batch=PIVOTAL_BATCH)
        with torch.no_grad():
            for d in deltas:
                expected = to_uint8(reverse_diffusion(at_yaw(tuned, torch.tensor([yaw + d])), z[k:k + 1], 2))[0]
                untuned = to_uint8(reverse_diffusion(at_yaw(net, torch.tensor([yaw + d])), z[k:k + 1], 2))[0]
                got = images[(method == "yaw") & (delta == d) & (ids == image_id)][0]
                assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
                untuned_differs.append(np.abs(untuned.astype(int) - expected.astype(int)).mean() > 0.5)
    assert all(untuned_differs)   # the tuning changed what is drawn
    # -colour maps the tuned copy's unmoved render onto the source too (its colours drift).
    unmoved = images[(method == "yaw") & (delta == 0)]
    sources_u8 = to_uint8(x)
    assert np.abs(images[(method == "yaw-colour") & (delta == 0)].astype(int)
                  - transport_colours(unmoved, sources_u8).astype(int)).mean() < 0.5
    # The first face's renders alone in its shard: the same images.
    alone, alone_meta = rendered(1)
    first = (ids == source.column("image_id")[0].as_py()) & (method == "yaw")
    assert np.array_equal(alone[np.array(alone_meta.column("method").to_pylist()) == "yaw"], images[first])
    # Cost: the tuning's 3 steps of forward + backward on 16 images, in decodes of 2 calls.
    assert calls_per_render(config)["yaw"] == round((4 + 3 * 3 * PIVOTAL_BATCH / 2 + 1 + 2) / 3, 3)


def test_the_yaw_methods_refuse_what_they_cannot_use(tmp_path):
    from headrot.moves import parse_variant
    from headrot.stages.render import RenderShards

    assert parse_variant("yaw-cal-colour").source == "yaw" and parse_variant("yaw-cal-colour").cal
    for bad in ("yaw-ortho", "yaw-norm-cal"):
        assert parse_variant(bad) is None
        with pytest.raises(ValueError, match="yaw"):
            RenderConfig(root="r", methods=(bad,))
    root, data, ckpt = yaw_run(tmp_path)
    with pytest.raises(ValueError, match="give render `data`"):
        RenderShards(RenderConfig(root=root, methods=("yaw",), steps=2, yaw_generator=ckpt))
    plain = storage.join(root, "checkpoints", "generator", "model.pt")
    with pytest.raises(ValueError, match="no yaw input"):
        RenderShards(RenderConfig(root=root, methods=("yaw",), steps=2, data=data, yaw_generator=plain))
    config = RenderConfig(root=root, methods=("yaw",), steps=2, split="all", data=str(tmp_path), yaw_generator=ckpt)
    latents = storage.list_files(storage.join(root, "latents"), ".parquet")[0]
    with pytest.raises(ValueError, match="img_align_celeba/.*the CelebA root these latents"):
        RenderShards(config)({"latents_uri": [latents], "take": [2], "shard": ["part-00000"]})


def test_yaw_methods_render_on_ray_with_the_sources_in_the_sheet_and_the_generator_in_the_fingerprint(
        ray_cluster, tmp_path):
    """The yaw methods through the stage: every (source, method, delta) once; with `data` the contact
    sheet's first column is the source image itself (here a flat colour per source, which no render
    of this untrained generator reproduces); another yaw generator is another render."""
    import shutil

    from PIL import Image

    from headrot.report.contact_sheet import contact_sheet

    root, data, ckpt = yaw_run(tmp_path)
    table = tables.read_parquet(storage.list_files(storage.join(root, "latents"), ".parquet")[0])
    for k, image_id in enumerate(table.column("image_id").to_pylist()):   # flat, recognisable sources
        Image.new("RGB", (178, 218), (40 * (k % 6), 200, 90)).save(tmp_path / "data" / "img_align_celeba" / image_id)
    config = RenderConfig(root=root, deltas=(-10, 0, 10), split="all", limit=4, steps=2, data=data,
                          yaw_generator=ckpt, methods=("yaw-colour", "no_move"), sheet_sources=2)
    summary = run_render(config)
    rotated = read_rotated(storage.join(root, "rotated"))
    assert summary["renders"] == rotated.num_rows == 4 * 2 * 3
    assert set(Counter(zip(rotated.column("source_id").to_pylist(), rotated.column("method").to_pylist(),
                           rotated.column("delta").to_pylist())).values()) == {1}
    sheet = np.asarray(Image.open(storage.join(root, "report", "contact_sheet_yaw-colour.png")).convert("RGB"))
    ids = rotated.column("source_id").to_pylist()
    order = sorted(set(ids), key=ids.index)
    # The sheet rebuilt with the flat source images in its first column is the sheet written.
    lights = dict(zip(ids, rotated.column("light").to_pylist()))
    by_light: dict[str, list[str]] = {}
    for sid in order:
        if len(by_light.setdefault(lights[sid], [])) < 2:
            by_light[lights[sid]].append(sid)
    rows_order = [sid for light in sorted(by_light) for sid in by_light[light]]
    from headrot.stages.render import read_source_images

    sources = dict(zip(rows_order, read_source_images(data, rows_order, 16)))
    renders = {(r["source_id"], r["delta"]): np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB"))
               for r in rotated.filter(pa.compute.equal(rotated.column("method"), "yaw-colour")).to_pylist()}
    expected = contact_sheet([(sources[s], [renders[(s, d)] for d in (-10, 0, 10)]) for s in rows_order],
                             ["-10", "+0", "+10"], [f"{lights[s]} {s.rsplit('.', 1)[0]}" for s in rows_order],
                             source_label="source")
    np.testing.assert_array_equal(sheet, np.asarray(expected.convert("RGB")))
    assert run_render(config).get("skipped") is True
    other = str(tmp_path / "other_yaw.pt")
    shutil.copy(ckpt, other)
    with open(other, "ab") as f:   # another file (a byte more), the same network
        f.write(b"\0")
    with pytest.raises(ValueError, match="other inputs"):
        run_render(RenderConfig(**{**config.__dict__, "yaw_generator": other}))


def test_the_colour_settings_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="give `data`"):
        RenderConfig(root="r", methods=("embeddings-colour",), colour_reference="source")
    with pytest.raises(ValueError, match="colour_map"):
        RenderConfig(root="r", methods=("embeddings-colour",), colour_map="histogram")
    with pytest.raises(ValueError, match="colour_guidance_steps"):
        RenderConfig(root="r", methods=("yaw-colour",), data="d", steps=10, colour_guidance_steps=11)
    # auto: the source images when render.data is known (as `headrot run` sets it), else the unmoved render
    assert RenderConfig(root="r", methods=("embeddings-colour",), data="d").colours_from_source()
    assert not RenderConfig(root="r", methods=("embeddings-colour",)).colours_from_source()
    assert not RenderConfig(root="r", methods=("embeddings-colour",), data="d", colour_reference="unmoved").colours_from_source()
    assert not RenderConfig(root="r", methods=("embeddings",), data="d").colours_from_source()   # nothing to colour
