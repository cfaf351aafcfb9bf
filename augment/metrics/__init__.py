"""Evaluation metrics: Fréchet distances and KID (frechet), precision/recall/density/coverage
(prdc), memorisation, the domain feature extractor (extractor), classifier training (classic,
classifier_training, stacked), the downstream grid (downstream) and its verdict (verdict),
the whole evaluation of a run (evaluate), its typed result (result) and the report (report, plots).

Submodules are imported on use (``from augment.metrics import downstream``), so importing the
package stays cheap.
"""
