"""Evaluation metrics: Fréchet distances and KID (frechet), precision/recall/density/coverage
(prdc), memorisation, the downstream classifier grid (downstream), the domain feature extractor
(extractor) and the report writer (report).

Submodules are imported on use (``from augment.metrics import downstream``), so importing the
package stays cheap.
"""
