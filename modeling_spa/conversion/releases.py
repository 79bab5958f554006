"""The one table of the public checkpoints that load by a short name, each pinned by its sha256, and the licence of
each family's public weights (for model cards).

A release not listed here loads by path (PSLA's files have no published hash, and so no short name). Adding one:
a `Release` entry below with its pinned hash; its family's loader (`modeling_spa.conversion.load_backbone`) then
takes the short name.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Release:
    """One public checkpoint file of a backbone family, as its authors published it.

    Attributes:
        name: the short name users pass (`pretrained_backbone="passt-s-swa-ap476"`).
        backbone: the registry name of its family.
        url: where the authors published it.
        sha256: its pinned hash; the file is refused if it differs.
        licence: the licence of the weights, for model cards.
        description: one line for listings and cards (what it is, its published mAP).
        file_name: its name in the cache, where the URL does not end in it (a Hub file called pytorch_model.bin).
        direct_download: False where the URL is a page, not the file (a Google Drive folder): the file is then
            never downloaded automatically, and the error says where to put it.
    """

    name: str
    backbone: str
    url: str
    sha256: str
    licence: str
    description: str = ""
    file_name: str = ""
    direct_download: bool = True

    @property
    def filename(self) -> str:
        """The file's name in the cache: `file_name`, else the URL's last segment without a query, `%3D` decoded."""
        return self.file_name or self.url.split("?", 1)[0].rsplit("/", 1)[-1].replace("%3D", "=")


RELEASES: dict[str, Release] = {}


def register_release(release: Release) -> None:
    RELEASES[release.name] = release


# CLAP's audio tower, loaded by transformers from the Hub at this revision (listed for its provenance in cards).
CLAP_UNFUSED, CLAP_UNFUSED_REVISION = "laion/clap-htsat-unfused", "8fa0f1c6d0433df6e97c127f64b2a1d6c0dcda8a"

RELEASES: dict[str, Release] = {
    release.name: release
    for release in (
        # Koutini et al.: PaSST-S, patch 16, stride 10, SWA, AudioSet mAP .476. The sha256 was computed by third
        # parties (several agree), not published by the authors. Other releases have no known hash: pass their file.
        Release(
            name="passt-s-swa-ap476",
            backbone="passt",
            url="https://github.com/kkoutini/PaSST/releases/download/v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt",
            sha256="302903fa8c4aee817b11dc982da0b29aaf8d11a3e722420476d0a12c9db70c2c",
            licence="apache-2.0",
            description="PaSST-S (patch 16, stride 10, SWA), AudioSet mAP 0.476",
        ),
        Release(
            name="cnn14-ap431",
            backbone="cnn14",
            # Zenodo serves the file at this address (`?download=1` only adds an attachment header).
            url="https://zenodo.org/records/3987831/files/Cnn14_mAP%3D0.431.pth",
            sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
            licence="cc-by-4.0",
            description="PANNs CNN14 trained on AudioSet at 32 kHz (Kong et al., 2020), mAP 0.431",
        ),
        # HTS-AT's own checkpoints are in a Google Drive folder without a direct link to each file: never downloaded
        # automatically (the error says where to put them).
        Release(
            name="htsat-audioset-1",
            backbone="htsat",
            url="https://drive.google.com/drive/folders/1f5VYMk0uos_YnuBshgmaTVioXbs7Kmz6",
            sha256="49804bf7767809be5d5bfe9dc25f401442e0d24f242dded6b6dabea56bb645b0",
            licence="mit",
            description=(
                "HTS-AT's AudioSet checkpoint HTSAT_AudioSet_Saved_1.ckpt, one of the six models of its ensemble (the "
                "paper: mAP 0.471 single, 0.487 ensemble), from the authors' Google Drive folder. Its sha256 comes "
                "from a single third-party source, not from the authors."
            ),
            file_name="HTSAT_AudioSet_Saved_1.ckpt",
            direct_download=False,
        ),
        Release(
            name=CLAP_UNFUSED,
            backbone="htsat",
            url=f"https://huggingface.co/{CLAP_UNFUSED}/resolve/{CLAP_UNFUSED_REVISION}/pytorch_model.bin",
            sha256="1cd3c601bc4afe0fa87be3de4c13dd2cfadd249fac1e29acf74a9b296c3219bb",
            licence="apache-2.0",
            description="CLAP's HTS-AT audio tower (LAION, unfused; 48 kHz; no AudioSet head), from the Hub.",
            file_name="clap-htsat-unfused-pytorch_model.bin",
        ),
    )
}

# The licence of each family's public weights (and code, where it differs, said beside it), for model cards.
FAMILY_LICENCES = {
    "ast": "bsd-3-clause",  # MIT/ast-finetuned-audioset-10-10-0.4593, as the YuanGongND/ast repository
    "cnn14": "cc-by-4.0",  # PANNs' Cnn14_mAP=0.431.pth (Zenodo record 3987831); the code is MIT
    "htsat": "mit",  # HTS-AT's AudioSet checkpoints; CLAP's laion/clap-htsat-unfused is Apache-2.0
    "psla": "bsd-3-clause",  # YuanGongND/psla
    "passt": "apache-2.0",  # kkoutini/PaSST code and release weights
    # transformers' speech encoders: each checkpoint has its own (facebook/wav2vec2-base apache-2.0, openai/whisper-*
    # apache-2.0, microsoft/wavlm-* and several HuBERT/UniSpeech releases under other terms); no config records it.
    "hub": "see the checkpoint's card on the Hub",
}


def releases_of(family: str) -> dict[str, Release]:
    """The releases of one backbone family, by short name."""
    return {name: release for name, release in RELEASES.items() if release.backbone == family}
