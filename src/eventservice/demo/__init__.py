"""``eventservice demo``: the whole system on one machine, pilots dying on purpose."""

from eventservice.demo.run import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
