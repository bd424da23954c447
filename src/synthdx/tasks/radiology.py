"""Chest X-ray finding detection: the label space, and the curated labels from IU X-ray MeSH heads."""

from __future__ import annotations

from ..records import LabelSpace

# label -> the hand-coded MeSH `Problems` heads that give it (IU X-ray / Open-i).
MESH_HEADS: dict[str, tuple[str, ...]] = {
    "No Finding": ("normal",),
    "Cardiomegaly": ("Cardiomegaly",),
    "Lung Opacity": ("Opacity", "Airspace Disease", "Infiltrate", "Density"),
    "Atelectasis": ("Pulmonary Atelectasis",),
    "Pleural Effusion": ("Pleural Effusion",),
    "Edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "Pneumonia": ("Pneumonia",),
    "Consolidation": ("Consolidation",),
    "Pneumothorax": ("Pneumothorax",),
    "Nodule or Mass": ("Nodule", "Mass"),
    "Granuloma": ("Calcified Granuloma", "Granulomatous Disease", "Granuloma"),
    "Emphysema or COPD": ("Emphysema", "Pulmonary Emphysema", "Pulmonary Disease, Chronic Obstructive",
                          "Bullous Emphysema"),
    "Fracture": ("Fractures, Bone",),
    "Support Devices": ("Catheters, Indwelling", "Surgical Instruments", "Implanted Medical Device",
                        "Tube, Inserted", "Medical Device", "Stents", "Sutures"),
}

RADIOLOGY_LABELS = LabelSpace(
    names=list(MESH_HEADS),
    synonyms={
        "No Finding": ["normal", "no findings", "none", "no acute findings"],
        "Cardiomegaly": ["enlarged heart", "cardiac enlargement"],
        "Lung Opacity": ["opacity", "airspace disease", "infiltrate", "density"],
        "Atelectasis": ["pulmonary atelectasis"],
        "Pleural Effusion": ["effusion"],
        "Edema": ["pulmonary edema", "pulmonary congestion", "vascular congestion"],
        "Consolidation": [],
        "Nodule or Mass": ["nodule", "mass", "lung nodule", "lung mass"],
        "Granuloma": ["calcified granuloma", "granulomatous disease"],
        "Emphysema or COPD": ["emphysema", "copd", "chronic obstructive pulmonary disease"],
        "Fracture": ["fractures", "rib fracture"],
        "Support Devices": ["device", "devices", "support device", "lines and tubes"],
    },
)

_HEAD_TO_LABEL = {head.lower(): label for label, heads in MESH_HEADS.items() for head in heads}


def labels_from_mesh_problems(problems: str) -> list[str]:
    """Curated labels of one report from its `Problems` field (heads separated by ';'),
    in label-space order. A report has a label when any of its heads is listed."""
    heads = {h.strip().lower() for h in problems.split(";") if h.strip()}
    found = {_HEAD_TO_LABEL[h] for h in heads if h in _HEAD_TO_LABEL}
    return [n for n in RADIOLOGY_LABELS.names if n in found]
