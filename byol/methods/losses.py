"""Loss functions, pure and stateless."""

import torch
import torch.nn.functional as F


def byol_loss(prediction: torch.Tensor, target_projection: torch.Tensor) -> torch.Tensor:
    """One direction of the BYOL loss, averaged over the batch: ||p/|p| - z'/|z'|||^2 = 2 - 2cos."""
    p = F.normalize(prediction.float(), dim=-1)  # NxD
    z = F.normalize(target_projection.float(), dim=-1)  # NxD
    return (2.0 - 2.0 * (p * z).sum(dim=-1)).mean()


# The collapse metric is sqrt(d) x the mean per-dimension std of the l2-normalised projections.
# Embeddings spread evenly over only r of the d dimensions score about sqrt(r / d), so 0.1 means
# about 1% of the dimensions in use (2-3 of 256): collapsed for any practical purpose. Healthy
# runs measured here stay near 0.9, so ordinary noise does not cross it.
COLLAPSED_BELOW = 0.1


@torch.no_grad()
def collapse_metric(projection: torch.Tensor) -> torch.Tensor:
    """Std over the batch of l2-normalised projections, averaged over dims, times sqrt(dim).

    About 1 for well-spread embeddings and 0 when every image maps to the same point.
    """
    z = F.normalize(projection.float(), dim=-1)
    return z.std(dim=0).mean() * z.shape[-1] ** 0.5


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is in half precision (autocast); float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def nt_xent(
    z_1: torch.Tensor,
    z_2: torch.Tensor,
    temperature: float,
    *,
    all_z_1: torch.Tensor | None = None,
    all_z_2: torch.Tensor | None = None,
    offset: int = 0,
) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2B views (docs/method.md, "Baselines"), averaged over the 2N
    anchors here.

    l_ij = -log( exp(sim(z_i, z_j)/t) / sum_{k != i} exp(sim(z_i, z_k)/t) ), sim = cosine; the
    positive of view i of image n is the other view of image n, every other view is a negative.
    One process: z_1, z_2 are the whole batch (B = N). Several: ``all_z_1``, ``all_z_2`` are the
    global batch gathered with gradients and z_1, z_2 its rows ``offset`` to ``offset + N``; the
    mean over processes of their losses is then the one-process loss over the global batch.
    """
    all_z_1 = z_1 if all_z_1 is None else all_z_1
    all_z_2 = z_2 if all_z_2 is None else all_z_2
    n, b = z_1.shape[0], all_z_1.shape[0]
    anchors = F.normalize(at_least_float32(torch.cat([z_1, z_2])), dim=-1)  # 2NxD
    views = F.normalize(at_least_float32(torch.cat([all_z_1, all_z_2])), dim=-1)  # 2BxD
    rows = torch.arange(offset, offset + n, device=anchors.device)
    own = torch.cat([rows, rows + b])  # each anchor's own column, excluded (k != i)
    positives = torch.cat([rows + b, rows])  # each anchor's other view
    logits = anchors @ views.T / temperature  # 2Nx2B
    self_pairs = F.one_hot(own, 2 * b).bool()
    return F.cross_entropy(logits.masked_fill(self_pairs, float("-inf")), positives)


def barlow_twins_loss(z_1: torch.Tensor, z_2: torch.Tensor, lambda_: float) -> torch.Tensor:
    """Barlow Twins: sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2 (docs/method.md,
    "Baselines").

    C is the DxD cross-correlation of the two views' embeddings, each standardised over the batch
    (over several processes, pass the global batch gathered with gradients).
    """
    z_1, z_2 = at_least_float32(z_1), at_least_float32(z_2)
    n = z_1.shape[0]
    a = (z_1 - z_1.mean(0)) / z_1.std(0, unbiased=False).clamp_min(1e-6)
    b = (z_2 - z_2.mean(0)) / z_2.std(0, unbiased=False).clamp_min(1e-6)
    c = a.T @ b / n  # DxD
    on_diagonal = (1 - c.diagonal()).pow(2).sum()
    off_diagonal = c.pow(2).sum() - c.diagonal().pow(2).sum()
    return on_diagonal + lambda_ * off_diagonal


def info_nce(
    query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> torch.Tensor:
    """MoCo's InfoNCE: each query against its own key (positive) and K shared negatives.

    query, key: NxD; negatives: KxD (the queue); all compared by cosine similarity.
    """
    q = F.normalize(query.float(), dim=-1)
    k = F.normalize(key.float(), dim=-1)
    positive = (q * k).sum(dim=-1, keepdim=True)  # Nx1
    negative = q @ F.normalize(negatives.float(), dim=-1).T  # NxK
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))
