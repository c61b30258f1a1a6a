"""The dataset manifest written by ``fam-skull prepare`` and read by train, predict and evaluate.

Layout of a prepared dataset folder::

    manifest.json                 every case, what was skipped and why, the options used
    cases/<id>.json               one record per finished case (reruns skip these)
    grid/<id>_<kind>.nii.gz       defective / complete / implant on the training grid
    original/<id>_<kind>.nii.gz   the same in the case's original geometry (evaluation sets)
"""

from __future__ import annotations

import json
from pathlib import Path

from data_prep.io import atomic_write_text, read_json
from data_prep.sources import check_id

FORMAT = "fam-skull-manifest/1"
ROLES = ("train", "val", "eval1", "eval2")
KINDS = ("defective", "complete", "implant")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file."""


class Manifest:
    """A prepared dataset: ``cases`` are dicts (schema in docs/data.md); paths in them are relative to ``root``."""

    def __init__(self, path: Path, data: dict) -> None:
        self.path = path
        self.root = path.parent
        self.data = data

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        if not path.is_file():
            raise ManifestError(f"{path}: manifest not found; run 'fam-skull prepare' first")
        try:
            data = read_json(path)
        except ValueError as e:
            raise ManifestError(f"{e}; rerun 'fam-skull prepare'") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ManifestError(f"{path}: not a fam-skull manifest (format {data.get('format') if isinstance(data, dict) else None!r})")
        cases = data.get("cases")
        if not isinstance(cases, list) or not all(isinstance(c, dict) and "id" in c and c.get("role") in ROLES for c in cases):
            raise ManifestError(
                f"{path}: 'cases' must be a list of records with an id and a role ({', '.join(ROLES)}); rerun 'fam-skull prepare'"
            )
        seen = set()
        for case in cases:
            try:  # ids become output file names in predict and evaluate: none may leave their folders
                check_id(str(case["id"]))
            except ValueError as e:
                raise ManifestError(f"{path}: {e}; fix the manifest or prepare the dataset again") from None
            if case["id"] in seen:
                raise ManifestError(f"{path}: case id {case['id']!r} appears twice; fix the manifest or prepare the dataset again")
            seen.add(case["id"])
        return cls(path, data)

    def missing(self, roles: tuple[str, ...], space: str = "grid") -> list[str]:
        """Volumes of the cases in ``roles`` that the manifest names in ``space`` but that are not on disk (or
        not named at all)."""
        out = []
        for case in self.role(*roles):
            for kind in KINDS:
                rel = (case.get(space) or {}).get(kind)
                if rel is None or not (self.root / rel).is_file():
                    out.append(f"case {case['id']} {space} {kind}" + (f" ({self.root / rel})" if rel else ""))
        return out

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1))

    @property
    def cases(self) -> list[dict]:
        return self.data["cases"]

    def role(self, *roles: str) -> list[dict]:
        """Cases whose role is one of ``roles``, sorted by id."""
        return sorted((c for c in self.cases if c["role"] in roles), key=lambda c: c["id"])

    def subset(self, ids: set[str], path: str | Path) -> Manifest:
        """The training and validation cases with only the evaluation cases in ``ids``, saved at ``path`` with
        absolute volume paths (it can live anywhere; the volumes stay where they are).

        Raises:
            ManifestError: an id is not an evaluation case here.
        """
        held_out = {c["id"] for c in self.role("eval1", "eval2")}
        unknown = sorted(set(ids) - held_out)
        if unknown:
            raise ManifestError(f"{self.path}: {', '.join(unknown)} are not evaluation cases here; pick ids from eval1 or eval2")
        cases = []
        for case in self.cases:
            if case["role"] in ("eval1", "eval2") and case["id"] not in ids:
                continue
            spaces = {s: {k: str((self.root / v).resolve()) for k, v in case[s].items()} for s in ("grid", "original") if s in case}
            cases.append(case | spaces)
        subset = Manifest(Path(path), self.data | {"cases": cases})
        subset.save()
        return subset

    def file(self, case: dict, space: str, kind: str) -> Path:
        """Absolute path of ``case``'s ``kind`` volume in ``space`` (``"grid"`` or ``"original"``)."""
        try:
            return self.root / case[space][kind]
        except KeyError:
            raise ManifestError(f"{self.path}: case {case['id']} has no {space} {kind} volume") from None
