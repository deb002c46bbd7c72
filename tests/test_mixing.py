import pytest
import torch

from mixreorg_edge.teacher.mixing import make_plan, mix_pixels, mix_tokens, mixed_batch_size, restore_tokens


@pytest.mark.parametrize("images,block,grid", [(2, 1, (4, 4)), (4, 1, (8, 8)), (4, 2, (8, 8)), (3, 2, (5, 7))])
def test_restore_inverts_mix(images: int, block: int, grid: tuple[int, int]) -> None:
    batch = images * 3
    tokens = torch.randn(batch, grid[0] * grid[1], 5)
    plan = make_plan(batch, grid, images, block, generator=torch.Generator().manual_seed(0))
    mixed = mix_tokens(tokens, plan)
    assert not torch.equal(mixed, tokens)
    assert torch.equal(restore_tokens(mixed, plan), tokens)
    assert torch.equal(mix_tokens(restore_tokens(tokens, plan), plan), tokens)


def test_mix_is_a_permutation_within_groups_and_positions() -> None:
    plan = make_plan(8, (4, 4), images=4, generator=torch.Generator().manual_seed(1))
    source = plan.source
    for group in range(2):
        members = source[group * 4 : (group + 1) * 4]  # (K, L)
        assert torch.equal(members.sort(dim=0).values, torch.arange(group * 4, group * 4 + 4)[:, None].expand(4, 16))


def test_block_mixing_keeps_blocks_together() -> None:
    plan = make_plan(4, (4, 4), images=2, block=2, generator=torch.Generator().manual_seed(2))
    grid = plan.source.view(4, 4, 4)
    for y in (0, 2):
        for x in (0, 2):
            block = grid[:, y : y + 2, x : x + 2].reshape(4, -1)
            assert (block == block[:, :1]).all()


def test_pixel_mixing_matches_token_mixing_of_patches() -> None:
    images = torch.randn(4, 3, 16, 16)
    plan = make_plan(4, (4, 4), images=2, generator=torch.Generator().manual_seed(3))
    mixed = mix_pixels(images, plan, patch=4)
    for n in range(4):
        for p in range(16):
            y, x = divmod(p, 4)
            src = plan.source[n, p]
            assert torch.equal(mixed[n, :, y * 4 : y * 4 + 4, x * 4 : x * 4 + 4], images[src, :, y * 4 : y * 4 + 4, x * 4 : x * 4 + 4])


def test_bad_group_size_is_refused() -> None:
    with pytest.raises(ValueError, match="divisible"):
        make_plan(6, (2, 2), images=4)
    with pytest.raises(ValueError, match="at least 2"):
        make_plan(6, (2, 2), images=1)


def test_mixed_batch_size_keeps_whole_groups() -> None:
    assert mixed_batch_size(64, 4, 1.0) == 64
    assert mixed_batch_size(64, 4, 0.5) == 32
    assert mixed_batch_size(64, 4, 0.01) == 4  # at least one group
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="fraction"):
            mixed_batch_size(64, 4, fraction)
