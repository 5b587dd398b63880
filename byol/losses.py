"""Loss functions, pure and stateless."""

import torch
import torch.nn.functional as F


def byol_loss(prediction: torch.Tensor, target_projection: torch.Tensor) -> torch.Tensor:
    """One direction of the BYOL loss, averaged over the batch: ||p/|p| - z'/|z'|||^2 = 2 - 2cos."""
    p = F.normalize(prediction.float(), dim=-1)  # NxD
    z = F.normalize(target_projection.float(), dim=-1)  # NxD
    return (2.0 - 2.0 * (p * z).sum(dim=-1)).mean()


@torch.no_grad()
def collapse_metric(projection: torch.Tensor) -> torch.Tensor:
    """Std over the batch of l2-normalised projections, averaged over dims, times sqrt(dim).

    About 1 for well-spread embeddings and 0 when every image maps to the same point.
    """
    z = F.normalize(projection.float(), dim=-1)
    return z.std(dim=0).mean() * z.shape[-1] ** 0.5
