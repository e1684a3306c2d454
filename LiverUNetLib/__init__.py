"""LiverUNetLib: the pure-Python engine behind the LiverUNet Slicer extension.

Only torch, numpy, SimpleITK and small pure-Python helpers are imported here; never ``slicer``,
``qt`` or ``vtk``. Every public function takes a :class:`~LiverUNetLib.volume.Volume` (voxels in
KJI order plus a 4x4 IJK-to-RAS matrix), so Slicer, its Python console and the command line share
one code path.
"""

__version__ = "0.2.0"

from .errors import LiverUNetError  # noqa: E402
from .volume import Volume  # noqa: E402

__all__ = ["LiverUNetError", "Volume", "__version__"]
