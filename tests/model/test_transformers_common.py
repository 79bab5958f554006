"""transformers' own common tests against SPA: `ModelTesterMixin`, `ConfigTester` and `PipelineTesterMixin` on tiny
demo-CNN and AST models, the sequence feature-extraction mixins on `SPAFeatureExtractor`.

The mixins are not in the transformers wheel. They come from the source distribution of the installed version on
PyPI, downloaded once and cached in `<cache>/transformers-tests-<version>` (`$SPA_CACHE`, else
`~/.cache/modeling_spa`); without network the module is skipped. That sdist ships only the top-level `tests/*.py`,
not the sub-packages they import from (`tests/utils`, `tests/generation`, `tests/exporters`, `tests/pipelines`):
the few names taken from there are stood in for below, each with why the stand-in is enough. The mixins also import
`parameterized`: from the environment (the `dev` extra), else from a wheel cached the same way.
"""

from __future__ import annotations

import copy
import importlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import unittest
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import AudioClassificationOutputElement
from transformers import ASTConfig, AudioClassificationPipeline
from transformers.testing_utils import compare_pipeline_output_to_hub_spec

from modeling_spa import SPAConfig, SPAFeatureExtractor, SPAForAudioClassification, SPAModel
from modeling_spa.files import cache_dir
from modeling_spa.frontend import frontend_preset
from modeling_spa.taxonomy import AudioSetOntology

VERSION = transformers.__version__
CACHE = cache_dir() / f"transformers-tests-{VERSION}"
# The sdist's tests/ is imported as this package: its files import each other relatively. Not `tests`, the name of
# this suite's own folder.
PACKAGE = "transformers_sdist_tests"
PARAMETERIZED = "parameterized==0.9.0"


class DownloadError(OSError):
    pass


def _pip_download(destination: Path, *args: str) -> None:
    if os.environ.get("SPA_OFFLINE", "").lower() in {"1", "true", "yes"}:
        raise DownloadError("SPA_OFFLINE is set")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
    command += ["--timeout", "30", "--retries", "1", "--dest", str(destination), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise DownloadError(f"`pip download {' '.join(args)}` failed: {lines[-1]}")


def _sdist_tests() -> Path:
    """The top-level test files of the transformers sdist of the installed version, extracted once into the cache."""
    tests = CACHE / "tests"
    if (tests / "test_modeling_common.py").is_file():
        return tests
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        _pip_download(Path(tmp), "--no-binary", ":all:", f"transformers=={VERSION}")
        archives = list(Path(tmp).glob("transformers-*.tar.gz"))
        if len(archives) != 1:
            raise DownloadError(f"expected one transformers sdist, pip gave {[a.name for a in archives]}")
        archive = archives[0]
        staging = Path(tmp) / "tests"
        staging.mkdir()
        prefix = f"transformers-{VERSION}/tests/"
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix(prefix)
                # Flat .py files only: nothing outside the folder can be written, whatever the archive holds.
                if member.isfile() and member.name.startswith(prefix) and "/" not in name and name.endswith(".py"):
                    (staging / name).write_bytes(tar.extractfile(member).read())
        try:
            staging.rename(tests)  # whole or not at all, should a run be killed or race another
        except OSError:
            if not (tests / "test_modeling_common.py").is_file():
                raise
    return tests


def _ensure_parameterized() -> None:
    try:
        import parameterized  # noqa: F401
    except ImportError:
        wheels = CACHE / "wheels"
        found = sorted(wheels.glob("parameterized-*.whl"))
        if not found:
            _pip_download(wheels, "--only-binary", ":all:", PARAMETERIZED)
            found = sorted(wheels.glob("parameterized-*.whl"))
        sys.path.append(str(found[-1]))  # a pure-Python wheel is an importable zip


class _PipelineTestsStandIn(unittest.TestCase):
    """Stands in for `tests/pipelines/test_pipelines_audio_classification.AudioClassificationPipelineTests`.

    `PipelineTesterMixin` takes only its `get_test_pipeline` and `run_pipeline_test`. They do what upstream's do for a
    tiny model: build the pipeline from the model and its feature extractor, and check the output format on raw
    waveforms of two lengths (upstream also reads a Hub dataset when torchaudio is installed: neither is here).
    """

    def get_test_pipeline(self, model, tokenizer=None, image_processor=None, feature_extractor=None, **kwargs):
        classifier = AudioClassificationPipeline(model=model, feature_extractor=feature_extractor, **kwargs)
        return classifier, [np.zeros(14000), np.zeros(34000)]

    def run_pipeline_test(self, classifier, examples):
        num_labels = classifier.model.config.num_labels
        for audio in examples:
            output = classifier(audio)
            self.assertEqual(len(output), min(5, num_labels))
            self.assertTrue(all(isinstance(o["score"], float) and isinstance(o["label"], str) for o in output))
            self.assertIn(output[0]["label"], classifier.model.config.id2label.values())
            (best,) = classifier(audio, top_k=1)
            self.assertEqual(best, output[0])
            compare_pipeline_output_to_hub_spec(best, AudioClassificationOutputElement)


# name -> attributes of the sub-package modules the sdist lacks.
STAND_INS = {
    # ModelTesterMixin only checks that testers of models that cannot generate do not inherit it.
    "generation.test_utils": {"GenerationTesterMixin": type("GenerationTesterMixin", (), {})},
    # The base of ModelTesterMixin: its export tests (dynamo, ONNX, ExecuTorch, ...) are not in the sdist, so they
    # are not run here; tests/model/test_modeling.py traces and exports SPA itself.
    "exporters.test_export": {"ExportTesterMixin": type("ExportTesterMixin", (), {})},
    # Read only by ConfigTester.check_config_arguments_init, which returns before reading it for composite configs
    # (SPAConfig has the backbone's `audio_config`).
    "utils.test_configuration_utils": {"config_common_kwargs": {}},
    "pipelines.test_pipelines_audio_classification": {"AudioClassificationPipelineTests": _PipelineTestsStandIn},
}


def _install_package(tests: Path) -> None:
    package = types.ModuleType(PACKAGE)
    package.__path__ = [str(tests)]
    sys.modules[PACKAGE] = package
    for dotted, attributes in STAND_INS.items():
        parts = dotted.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join([PACKAGE, *parts[:depth]])
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__path__ = []
                sys.modules[name] = module
        vars(sys.modules[f"{PACKAGE}.{dotted}"]).update(attributes)


class _TransformersAndSPA(types.ModuleType):
    """transformers' namespace plus SPA's classes, for the pipeline mixin, which looks processors up by name."""

    def __getattr__(self, name: str):
        return getattr(transformers, name)


def _import_mixins(summary_dir: Path) -> list[types.ModuleType]:
    # At import, the pipeline mixin reads the Hub's tiny-model summary (not in the sdist) unless it is pointed at a
    # local folder of tiny models, and two files import transformers' source tree, absent from the cache: the
    # installed package is the same version.
    namespace = _TransformersAndSPA("transformers_and_spa")
    namespace.SPAFeatureExtractor = SPAFeatureExtractor
    names = ("test_modeling_common", "test_configuration_common", "test_sequence_feature_extraction_common")
    with (
        mock.patch.dict(os.environ, {"TRANSFORMERS_TINY_MODEL_PATH": str(summary_dir)}),
        mock.patch.object(transformers.utils, "direct_transformers_import", lambda *args, **kwargs: namespace),
    ):
        modules = [importlib.import_module(f"{PACKAGE}.{name}") for name in (*names, "test_pipeline_mixin")]
    for spec in modules[-1].pipeline_test_mapping.values():
        spec["test"] = spec["test"].replace("tests.", f"{PACKAGE}.", 1)
    return modules


def _write_tiny_model_summary() -> Path:
    folder = CACHE / "tiny-models"
    (folder / "reports").mkdir(parents=True, exist_ok=True)
    summary = '{"SPAForAudioClassification": {"tokenizer_classes": [], "processor_classes": ["SPAFeatureExtractor"]}}'
    (folder / "reports" / "tiny_model_summary.json").write_text(summary)
    return folder


try:
    _ensure_parameterized()
    _install_package(_sdist_tests())
except (OSError, subprocess.SubprocessError) as error:
    pytest.skip(
        f"transformers' common tests (from the sdist of transformers {VERSION} on PyPI) are not cached in {CACHE} "
        f"and could not be downloaded: {error}",
        allow_module_level=True,
    )

with warnings.catch_warnings():
    # Marks that transformers' own conftest registers (flash_attn_test, torch_compile_test, ...).
    warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
    common, configuration_common, sequence_common, pipeline_mixin = _import_mixins(_write_tiny_model_summary())

LABEL_NAMES = ("Dog", "Bark", "Siren")  # a parent, its child, and a class far from both


def audioset_labels() -> dict:
    ontology = AudioSetOntology.load()
    mid_of = dict(zip(ontology.label_names, ontology.label_mids, strict=True))
    mids = [mid_of[name] for name in LABEL_NAMES]
    return {
        "label_mids": mids,
        "label_names": [ontology.name(mid, "full") for mid in mids],
        "label_paths": ontology.descriptions("concat", mids),
    }


class SPAModelTester:
    """Tiny SPA configs built in code; `input_values` (batch, samples) with a sample-level `attention_mask`.

    The models of the common tests are built from a config alone, so their label text and distances are not built
    (zeros): the tester trains with plain BCE and α = 0, which need neither.
    """

    def __init__(self, parent, backbone: str, batch_size: int = 3):
        self.parent = parent
        self.backbone = backbone
        self.batch_size = batch_size
        self.is_training = True
        self.labels = audioset_labels()
        self.num_labels = len(self.labels["label_mids"])
        if backbone == "demo_cnn":
            self.audio_config = {"hidden_sizes": [4, 8], "num_mel_bins": 16, "dropout": 0.0}
            self.frontend = {**frontend_preset("tiny"), "n_mels": 16}
            self.num_samples = 4000
            # hidden_states: the normalised log-mel (batch, 1, frames, mels), then each block's feature map.
            self.num_hidden_layers = len(self.audio_config["hidden_sizes"])
            self.seq_length = 1 + self.num_samples // self.frontend["hop_length"]
            self.hidden_size = self.frontend["n_mels"]
        else:
            self.audio_config = ASTConfig(
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                num_mel_bins=32,
                max_length=32,
                frequency_stride=16,
                time_stride=16,
            ).to_dict()
            self.frontend = {**frontend_preset("ast"), "n_mels": 32, "max_frames": 32}
            self.num_samples = 5000
            self.num_hidden_layers = 2
            self.num_attention_heads = 2
            self.hidden_size = 16
            self.seq_length = 2 + 2 * 2  # CLS and distillation tokens, then 2 x 2 patches of 16 x 16

    def get_config(self) -> SPAConfig:
        return SPAConfig(
            backbone=self.backbone,
            audio_config=copy.deepcopy(self.audio_config),
            frontend=copy.deepcopy(self.frontend),
            projection_dim=8,
            text_hidden_size=12,
            spa_alpha=0.0,
            classification_loss="bce",
            **self.labels,
        )

    def prepare_config_and_inputs(self) -> tuple[SPAConfig, torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(0)
        input_values = 0.1 * torch.randn(self.batch_size, self.num_samples, generator=generator)
        attention_mask = torch.ones(self.batch_size, self.num_samples, dtype=torch.long)
        attention_mask[-1, 3 * self.num_samples // 4 :] = 0
        input_values[attention_mask == 0] = 0.0
        return self.get_config(), input_values, attention_mask

    def prepare_config_and_inputs_for_common(self) -> tuple[SPAConfig, dict]:
        config, input_values, attention_mask = self.prepare_config_and_inputs()
        return config, {"input_values": input_values, "attention_mask": attention_mask}


class SPAModelTestBase(common.ModelTesterMixin, pipeline_mixin.PipelineTesterMixin):
    backbone: str
    all_model_classes = (SPAModel, SPAForAudioClassification)
    pipeline_model_mapping = {"audio-classification": SPAForAudioClassification}
    test_resize_embeddings = False
    # The backbone is a sub-config (`audio_config`) and, for AST, a PreTrainedModel of its own.
    _is_composite = True
    # Upstream exempts models it dates before 2023 by a copyright line, which these files do not have: SPA is not one.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # The pipeline mixin loads `<TRANSFORMERS_TINY_MODEL_PATH>/spa/SPAForAudioClassification`: one per backbone.
        cls.tiny_models = Path(tempfile.mkdtemp(prefix=f"spa-tiny-{cls.backbone}-"))
        tester = SPAModelTester(None, cls.backbone)
        torch.manual_seed(0)
        model = SPAForAudioClassification(tester.get_config())
        ontology = AudioSetOntology.load()
        with torch.no_grad():
            model.label_distances.copy_(torch.from_numpy(ontology.distances_for(tester.labels["label_mids"])))
            model.label_text_embeds.normal_()
        path = cls.tiny_models / "spa" / "SPAForAudioClassification"
        model.save_pretrained(path)
        SPAFeatureExtractor(sampling_rate=tester.frontend["sampling_rate"], max_length_s=1.0).save_pretrained(path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tiny_models, ignore_errors=True)
        super().tearDownClass()

    def setUp(self):
        self.model_tester = SPAModelTester(self, self.backbone)
        self.config_tester = configuration_common.ConfigTester(
            self,
            config_class=SPAConfig,
            has_text_modality=False,
            backbone=self.backbone,
            projection_dim=8,
            label_mids=self.model_tester.labels["label_mids"],
        )
        self.enterContext(mock.patch.object(pipeline_mixin, "TRANSFORMERS_TINY_MODEL_PATH", str(self.tiny_models)))
        # The mixin knows a base model (no head, no loss) by transformers' static table of base models, which a model
        # registered at import is not in: tell it, for its view only, that SPA's is SPAModel.
        base_models = {**common.MODEL_MAPPING_NAMES, SPAConfig.model_type: SPAModel.__name__}
        self.enterContext(mock.patch.object(common, "MODEL_MAPPING_NAMES", base_models))

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels and model_class is SPAForAudioClassification:
            labels = torch.zeros(self.model_tester.batch_size, self.model_tester.num_labels)
            labels[0, :2] = 1.0  # Bark and its parent Dog, multi-label as in AudioSet
            labels[1, 2] = 1.0
            inputs_dict["labels"] = labels
        return inputs_dict

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_sdpa_can_dispatch_non_composite_models(self):
        # Composite by its config, but with one attention stack, the backbone's: the single-tower check applies (the
        # composite one is written for a vision or audio tower next to a language model).
        with mock.patch.object(self, "_is_composite", False):
            super().test_sdpa_can_dispatch_non_composite_models()

    @unittest.skip(reason="SPA takes waveforms: it has no token embeddings to get or set")
    def test_model_get_set_embeddings(self):
        pass


class SPADemoCNNModelTest(SPAModelTestBase, unittest.TestCase):
    backbone = "demo_cnn"
    has_attentions = False


class SPAASTModelTest(SPAModelTestBase, unittest.TestCase):
    backbone = "ast"


class SPAFeatureExtractionTester:
    def __init__(self, parent, batch_size: int = 7, min_seq_length: int = 400, max_seq_length: int = 2000):
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = 1

    def prepare_feat_extract_dict(self) -> dict:
        return {"sampling_rate": 16000, "max_length_s": 1.0, "padding_value": 0.0, "return_attention_mask": True}

    def prepare_inputs_for_common(self, equal_length: bool = False, numpify: bool = False) -> list:
        rng = np.random.default_rng(0)
        lengths = [self.max_seq_length] * self.batch_size
        if not equal_length:
            lengths = list(range(self.min_seq_length, self.max_seq_length, self.seq_length_diff))
        inputs = [rng.standard_normal(length).astype(np.float32) for length in lengths]
        return inputs if numpify else [clip.tolist() for clip in inputs]


class SPAFeatureExtractionTest(sequence_common.SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = SPAFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = SPAFeatureExtractionTester(self)
