"""Device mesh, parameter shardings by logical axis rules, and global batches.

One program for one CPU and a TPU pod: the mesh has axes (data, fsdp, tensor, expert); batches
split over data x fsdp; parameters split their `embed` axis over fsdp (ZeRO-3 style) and their
heads / mlp / vocab axes over tensor (Megatron style). A parameter's logical axes follow from
its name in the model, so models carry no sharding annotations and any model family works.
"""

import dataclasses
import math

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor", "expert")
# The expert axis also splits the batch: outside the MoE layers its devices do data parallelism.
BATCH_AXES = ("data", "fsdp", "expert")
# Logical axis -> mesh axis.
LOGICAL_RULES = {
    "embed": "fsdp",
    "heads": "tensor",
    "mlp": "tensor",
    "vocab": "tensor",
    "expert": "expert",
}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Devices per mesh axis; one axis may be -1 to take all remaining devices."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1

    def shape(self, num_devices: int) -> tuple[int, ...]:
        sizes = [getattr(self, axis) for axis in MESH_AXES]
        if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
            raise ValueError(
                f"mesh {dataclasses.asdict(self)}: sizes must be positive, with at most one -1."
            )
        fixed = math.prod(s for s in sizes if s != -1)
        if num_devices % fixed:
            raise ValueError(
                f"mesh {dataclasses.asdict(self)} needs a multiple of {fixed} devices, but "
                f"{num_devices} are available; change the mesh sizes in the config."
            )
        sizes = [num_devices // fixed if s == -1 else s for s in sizes]
        if math.prod(sizes) != num_devices:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))} uses {math.prod(sizes)} devices, but "
                f"{num_devices} are available; set one axis to -1 or make the product match."
            )
        return tuple(sizes)


def make_mesh(config: MeshConfig, devices=None) -> Mesh:
    """The mesh over all (or the given) devices."""
    devices = jax.devices() if devices is None else devices
    shape = config.shape(len(devices))
    return jax.make_mesh(shape, MESH_AXES, (AxisType.Auto,) * len(MESH_AXES), devices=devices)


def path_names(path) -> list[str]:
    """The string keys along a pytree path (dict keys, attributes), indices dropped."""
    names = []
    for key in path:
        name = getattr(key, "key", getattr(key, "name", None))
        if isinstance(name, str) and name != "value":
            names.append(name)
    return names


def logical_axes(path, ndim: int) -> tuple[str | None, ...]:
    """A parameter's logical axes, from its own name and its module's name."""
    names = path_names(path)
    leaf = names[-1] if names else ""
    module = names[-2] if len(names) > 1 else ""
    if leaf == "embedding" and ndim == 2:
        return ("vocab", "embed")
    if module in ("query", "key", "value"):
        return {3: ("embed", "heads", None), 2: ("heads", None)}.get(ndim, (None,) * ndim)
    if module == "out" and leaf == "kernel" and ndim == 3:
        return ("heads", None, "embed")
    if leaf in ("query", "key", "value_router", "out_router") and ndim == 3:  # MoEAttention
        return ("embed", "heads", None)
    if leaf == "value_experts":  # MoEAttention's [D, N, E, H]
        return ("embed", "heads", None, None)
    if leaf == "out_experts":  # MoEAttention's [N, E, H, D]
        return ("heads", None, None, "embed")
    if leaf in ("up", "gate") and ndim == 3:  # MoE experts [E, D, F]
        return ("expert", "embed", "mlp")
    if leaf == "down" and ndim == 3:  # [E, F, D]
        return ("expert", "mlp", "embed")
    if module in ("up", "gate"):
        return {2: ("embed", "mlp"), 1: ("mlp",)}.get(ndim, (None,) * ndim)
    if module == "down" and leaf == "kernel" and ndim == 2:
        return ("mlp", "embed")
    if module == "head" and leaf == "kernel" and ndim == 2:  # an untied output projection
        return ("embed", "vocab")
    return (None,) * ndim


def partition_spec(path, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Logical axes mapped to mesh axes; a dimension the axis does not divide stays whole."""
    spec = []
    for size, logical in zip(shape, logical_axes(path, len(shape))):
        axis = LOGICAL_RULES.get(logical)
        if axis is None or mesh.shape[axis] == 1 or size % mesh.shape[axis] or axis in spec:
            spec.append(None)
        else:
            spec.append(axis)
    return PartitionSpec(*spec)


def state_shardings(abstract_state, mesh: Mesh):
    """NamedShardings for every array in a pytree (params, optimizer moments mirror them)."""

    def sharding(path, x):
        shape = getattr(x, "shape", ())
        return NamedSharding(mesh, partition_spec(path, tuple(shape), mesh))

    return jax.tree_util.tree_map_with_path(sharding, abstract_state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Batches split their leading axis over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["expert"]


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows of a batch, assembled into global arrays split over data x fsdp."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )
