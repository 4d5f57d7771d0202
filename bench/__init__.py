"""`make bench`: the service on a throwaway database, driven by wrk, one table.

Every figure is the median of several runs with their min and max; every ratio
pairs two things measured in the same run of this command on the same machine.
"""
