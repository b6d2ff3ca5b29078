"""Systolic / PE-array mapper (ASICs): one mapping per legal kernel until the dataflow search
arrives with the ASIC issue."""

from mappers.fpga import candidates

__all__ = ["candidates"]
