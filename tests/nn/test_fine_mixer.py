import pytest
import torch

from stgraph.nn.fine_mixer import FineMixer, fine_layout, lattice_cells

WINDOW = 5


def grid(rows: int, cols: int) -> torch.Tensor:
    lat, lon = torch.meshgrid(50.0 + 0.25 * torch.arange(rows), -3.0 + 0.25 * torch.arange(cols), indexing="ij")
    return torch.stack([lat.flatten(), lon.flatten()], -1)


def test_a_full_lattice_is_found_in_any_node_order():
    pos = grid(3, 4)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    (rows, cols), cell = lattice_cells(pos[perm])
    assert (rows, cols) == (3, 4)
    assert torch.equal(cell, torch.arange(12)[perm])  # row-major from the south-west corner


def test_a_patch_or_subset_of_a_lattice_is_placed_on_its_bounding_map():
    pos = grid(6, 8)
    subset = torch.tensor([0, 5, 9, 12, 20, 30, 41, 47])  # corners (0, 0) and (5, 7) span the whole map
    (rows, cols), cell = lattice_cells(pos[subset])
    assert (rows, cols) == (6, 8) and torch.equal(cell, subset)
    (rows, cols), cell = lattice_cells(pos[[9, 10, 17, 18]])  # a 2 x 2 patch
    assert (rows, cols) == (2, 2) and cell.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "pos",
    [
        torch.tensor([[50.0, 1.0], [50.3, 1.7], [50.9, 0.2]]),
        grid(1, 5),
        torch.cat([grid(3, 4), torch.tensor([[50.1, -3.0]])]),  # off the lattice's spacing
        grid(40, 40)[[0, 41, 1599]],  # cells (0, 0), (1, 1), (39, 39): far too sparse a map
    ],
    ids=["scattered", "one-row", "off-spacing", "too-sparse"],
)
def test_anything_else_is_not_a_lattice(pos):
    assert lattice_cells(pos) is None
    layout = fine_layout(pos)
    assert layout.lattice is None and layout.graph is not None


def test_the_lattice_mixer_is_the_unet_on_the_map_with_the_steps_as_channels():
    torch.manual_seed(0)
    mixer = FineMixer(4, WINDOW, unet_hidden=8)
    pos = grid(3, 4)
    x = torch.randn(2, WINDOW, 12, 4)
    out = mixer(x, fine_layout(pos))
    z = mixer.down(x)  # (2, W, 12, R); nodes are row-major already
    maps = z.permute(0, 1, 3, 2).reshape(2, -1, 3, 4)  # (2, W·R, 3, 4), step-major
    back = mixer.unet(maps).reshape(2, WINDOW, -1, 12).permute(0, 1, 3, 2)
    torch.testing.assert_close(out, x + mixer.up(back))
    with pytest.raises(ValueError, match="windows of 5 steps"):
        mixer(x[:, :3], fine_layout(pos))


@pytest.mark.parametrize(
    "pos",
    [grid(3, 4), grid(6, 8)[[0, 5, 9, 12, 20, 30, 41, 47]], torch.rand(7, 2) + torch.tensor([50.0, 0.0])],
    ids=["lattice", "part-of-a-lattice", "graph"],
)
def test_mixing_does_not_depend_on_node_order(pos):
    torch.manual_seed(0)
    mixer = FineMixer(4, WINDOW, unet_hidden=8)
    x = torch.randn(2, WINDOW, pos.size(0), 4)
    perm = torch.randperm(pos.size(0), generator=torch.Generator().manual_seed(1))
    out = mixer(x, fine_layout(pos))
    out_perm = mixer(x[:, :, perm], fine_layout(pos[perm]))
    torch.testing.assert_close(out_perm, out[:, :, perm], atol=1e-5, rtol=1e-5)


def test_nodes_exchange_information_and_one_node_is_left_alone():
    torch.manual_seed(0)
    mixer = FineMixer(4, WINDOW, unet_hidden=8)
    pos = torch.tensor([[50.0, 1.0], [50.1, 1.1], [50.9, 0.2]])
    x = torch.randn(1, WINDOW, 3, 4)
    x2 = x.clone()
    x2[:, :, 1] += torch.randn(4)  # change node 1 only (not by a constant: LayerNorm would remove it)
    changed = (mixer(x2, fine_layout(pos)) - mixer(x, fine_layout(pos)))[:, :, 0]
    assert changed.abs().max() > 1e-4  # node 0 heard of it
    one = torch.randn(1, WINDOW, 1, 4)
    assert torch.equal(mixer(one, fine_layout(pos[:1])), one)
