"""The façade: the ``nrtrec`` command line. Each verb composes the packages' public names; no
package imports this one."""

from nrtrec.cli.main import app

__all__ = ["app"]
