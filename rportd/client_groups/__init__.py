"""Client groups: rport's parameter patterns, who belongs, and the groups of each tenant.

A group is an id, a description and `params`: for each of rport's client properties a list of
patterns (matching.py). Members come from the registry with the caller's `Scope`, and the groups
from the `client_groups` table with the caller's tenant compared exactly (store.py): a group never
sees another tenant's clients, and another tenant's group answers exactly like a missing one.
"""

from .matching import PARAM_NAMES, ClientGroup, Member, belongs, pattern_matches
from .parsing import (
    MAX_DESCRIPTION_LENGTH,
    MAX_ID_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS_PER_PARAM,
    check_group_id,
    parse_group,
)
from .store import (
    MAX_GROUP_IDS,
    MAX_GROUPS_PER_TENANT,
    ClientGroupNotFound,
    ClientGroups,
    clients_in_groups,
)

__all__ = ["ClientGroup", "ClientGroups", "Member", "ClientGroupNotFound", "PARAM_NAMES",
           "clients_in_groups", "parse_group", "check_group_id", "pattern_matches", "belongs",
           "MAX_GROUPS_PER_TENANT", "MAX_ID_LENGTH", "MAX_PATTERNS_PER_PARAM",
           "MAX_PATTERN_LENGTH", "MAX_DESCRIPTION_LENGTH", "MAX_GROUP_IDS"]
