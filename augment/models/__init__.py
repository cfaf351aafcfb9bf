"""Network architectures (one per file); training recipes live in augment.losses."""

from augment.models.discriminator import ProjectionDiscriminator
from augment.models.ensemble import SnapshotEnsemble
from augment.models.generator import ConditionalGenerator, layout

__all__ = ["ConditionalGenerator", "ProjectionDiscriminator", "SnapshotEnsemble", "layout"]
