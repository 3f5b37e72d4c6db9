"""What a report tells its reader beside its numbers: warnings (the numbers say nothing, or
less than they seem) and notes (how the inputs were read). Plain sentences, one per line;
the CLI prints them on stderr before the summary table, for a command and for ``show``."""

from __future__ import annotations

from collections.abc import Callable

from .metrics import no_better_than_chance
from .tables import at_alpha, fmt


def chance_warnings(doc: dict) -> list[str]:
    """interpolate: a dataset on which both endpoints are at chance, where the path says
    nothing (:func:`clipsharp.reports.metrics.no_better_than_chance`)."""
    path, found = doc["results"]["path"], []
    for dataset in doc["inputs"]["datasets"]:
        name, classes = dataset["name"], dataset.get("num_classes")
        ends = [at_alpha(path, 0.0)[name], at_alpha(path, 1.0)[name]]
        if classes and all(
            no_better_than_chance(m["accuracy"], classes, m["num_examples"]) for m in ends
        ):
            found.append(
                f"{name}: the zero-shot and the fine-tuned model are both at chance (accuracy "
                f"{fmt(ends[0]['accuracy'])} and {fmt(ends[1]['accuracy'])}, chance "
                f"{fmt(1 / classes)}): the path says nothing here; check the labels, "
                "--classnames and --templates, or the checkpoints"
            )
    return found


def saturation_warnings(doc: dict) -> list[str]:
    """sharpness: a dataset and rho whose perturbed model is at chance somewhere, with the
    rho to try instead (:func:`clipsharp.analyses.sharpness.saturation_advice`)."""
    from ..analyses.sharpness import saturation_advice

    found = []
    for name, rows in doc["summary"].items():
        for row in (r for r in rows if r["saturated"]):
            shown = [f"{a:g}" for a in row["saturated_alphas"] if a is not None]
            where = f" at alpha {', '.join(shown)}" if shown else ""
            found.append(
                f"{name}: at rho={row['rho']:g} the perturbed model is at chance (loss >= log C "
                f"or accuracy within one standard error of 1/C){where}: "
                f"{saturation_advice(doc, name, row['rho'])}"
            )
    return found


def selection_warnings(doc: dict) -> list[str]:
    """merge: alpha chosen on an OOD set, which is test-set selection."""
    s = doc["summary"]
    if not s.get("test_set_selection"):
        return []
    return [
        f"alpha {s['alpha']:g} was chosen on the OOD set {s['dataset']} (test-set selection): "
        "accuracy there is no longer an unbiased estimate; the metadata records it"
    ]


WARNINGS: dict[str, Callable[[dict], list[str]]] = {
    "interpolate": chance_warnings,
    "sharpness": saturation_warnings,
    "merge": selection_warnings,
}


def warnings_of(doc: dict) -> list[str]:
    """The warnings of a report, for its command (none for most)."""
    found = WARNINGS.get(doc.get("command"))
    return found(doc) if found else []


def class_notes(doc: dict) -> list[str]:
    """A dataset whose class names are not its own (ImageNet's, a list), and a dataset mapped
    onto a stored head by an assumed order."""
    mapping = (doc.get("config") or {}).get("head_mapping") or {}
    notes = []
    for entry in (doc.get("inputs") or {}).get("datasets", []):
        name, source = entry.get("name"), entry.get("class_names") or ""
        if source.startswith(("imagenet", "--classnames imagenet")):
            notes.append(f"{name}: class names {source}: CLIP's names of ImageNet's classes")
        if "assumed" in mapping.get(name, ""):
            notes.append(f"{name}: stored head: {mapping[name]}")
    return notes


def dataset_notes(doc: dict) -> list[str]:
    """What opening the datasets found: empty class folders, images left out."""
    notes = []
    for entry in (doc.get("inputs") or {}).get("datasets", []):
        name = entry.get("name")
        notes += [f"{name}: {note}" for note in entry.get("notes", [])]
        skipped = entry.get("skipped_images")
        if skipped:
            notes.append(
                f"{name}: {skipped['count']} images cannot be read and are left out "
                f"(--skip-bad-images), first: {skipped['first'][0]}"
            )
    return notes
