"""Identity resolution for a batch of messages (R-ID-2, R-ID-4, R-ID-5).

One `Resolver` serves one environment within one processor transaction. `prefetch` loads every
user the batch's keys can name in a few queries; `resolve` then works from memory (and remembers
users it creates or changes), so later messages of the batch see what earlier ones did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audience.db import one_of
from audience.environments.models import Environment
from audience.ingest.mapping import Keys
from audience.users import identity
from audience.users import service as users
from audience.users.merge import hold_user, merge_users
from audience.users.models import Identity, User


class Failed(Exception):
    """A message that can't be applied (R-ING-9): it goes to the failed-messages store."""

    def __init__(self, code: str, message: str, stage: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.stage = stage


class Resolver:
    def __init__(
        self,
        session: Session,
        environment: Environment,
        *,
        source: str = "ingest",
        write_pending: Callable[[], None] | None = None,
        new_id: Callable[[type[User] | type[Identity]], int | None] = lambda _: None,
        identities_later: list[tuple[User, str]] | None = None,
        users_later: list[User] | None = None,
    ) -> None:
        self.session = session
        self.environment = environment
        self.source = source
        # The caller's rows kept for later, written before anything reads their tables: before
        # a merge (which moves them) and a lookup by email or phone (which reads users).
        self.write_pending = write_pending
        self.new_id = new_id  # the id of a new row, when the caller allocates them
        # (user, anonymous id) pairs for the caller to insert in bulk; else ORM rows.
        self.identities_later = identities_later
        # New users, kept out of the session for the caller to insert as rows; else added.
        self.users_later = users_later
        # What each key names; None when looked up and not found, so it isn't looked up again.
        self.by_user_id: dict[str, User | None] = {}
        self.by_user_key: dict[str, User | None] = {}
        self.by_anonymous_id: dict[str, User | None] = {}

    def prefetch(self, all_keys: Iterable[Keys]) -> None:
        user_ids: set[str] = set()
        user_keys: set[str] = set()
        anonymous_ids: set[str] = set()
        for keys in all_keys:
            user_ids.update(v for v in (keys.user_id,) if v)
            user_keys.update(v for v in (keys.user_key,) if v)
            anonymous_ids.update(v for v in (keys.anonymous_id,) if v)
        # Locked against a concurrent REST merge until the batch commits (R-ID-8); a no-op on
        # SQLite, whose writers already take turns.
        live = users.live_users(self.environment.id).with_for_update(key_share=True)
        if user_ids:
            holders = select(User.id, User.user_id, User.merged_into_id).where(
                User.environment_id == self.environment.id,
                one_of(self.session, User.user_id, user_ids),
            )
            merged: dict[str, int] = {}
            for id, user_id, merged_into_id in self.session.execute(holders):
                if merged_into_id is not None and user_id is not None:
                    merged[user_id] = id
            for user in self.session.scalars(
                live.where(one_of(self.session, User.user_id, user_ids))
            ):
                self._remember(user)
            for user_id, id in merged.items():
                # A user merged away explicitly keeps its user_id: follow it to the survivor.
                self._follow(user_id, id)
            for value in user_ids:
                self.by_user_id.setdefault(value, None)
        if user_keys:
            for user in self.session.scalars(
                live.where(one_of(self.session, User.user_key, user_keys))
            ):
                self._remember(user)
            for value in user_keys:
                self.by_user_key.setdefault(value, None)
        if anonymous_ids:
            devices = select(Identity.value, Identity.user_id).where(
                Identity.environment_id == self.environment.id,
                Identity.kind == "anonymous_id",
                one_of(self.session, Identity.value, anonymous_ids),
            )
            held_by: dict[str, int] = {value: id for value, id in self.session.execute(devices)}
            # The users by primary key alone, in a query of their own: joined to identities, or
            # with another condition (environment, not merged), PostgreSQL without statistics
            # read the environment's users end to end through another index.
            owners = select(User).where(one_of(self.session, User.id, set(held_by.values())))
            locked = owners.with_for_update(key_share=True)
            by_id = {user.id: user for user in self.session.scalars(locked)} if held_by else {}
            for value, owner_id in held_by.items():
                owner = by_id.get(owner_id)
                if owner is not None and owner.merged_into_id is None:
                    self.by_anonymous_id[value] = owner
            for value in anonymous_ids:
                self.by_anonymous_id.setdefault(value, None)

    def _remember(self, user: User) -> None:
        self.by_user_key[user.user_key] = user
        if user.user_id:
            self.by_user_id[user.user_id] = user

    def _follow(self, user_id: str, holder: int) -> None:
        survivor = hold_user(self.session, environment_id=self.environment.id, id=holder)
        self.by_user_key[survivor.user_key] = survivor
        self.by_user_id[user_id] = survivor

    def _by_user_id(self, value: str) -> User | None:
        if value not in self.by_user_id:
            holder = self.session.scalar(
                select(User.id).where(
                    User.environment_id == self.environment.id, User.user_id == value
                )
            )
            if holder is None:
                self.by_user_id[value] = None
            else:
                self._follow(value, holder)
        return self.by_user_id[value]

    def _by_user_key(self, value: str) -> User | None:
        if value not in self.by_user_key:
            user = self.session.scalar(
                users.live_users(self.environment.id)
                .where(User.user_key == value)
                .with_for_update(key_share=True)
            )
            self.by_user_key[value] = user
            if user is not None:
                self._remember(user)
        return self.by_user_key[value]

    def _by_anonymous_id(self, value: str) -> User | None:
        if value not in self.by_anonymous_id:
            self.prefetch([Keys(anonymous_id=value)])
        return self.by_anonymous_id.get(value)

    def _by_lookup(self, kind: str, value: str) -> User:
        if self.write_pending is not None:
            self.write_pending()
        query = users.live_users(self.environment.id)
        if kind == "email":
            query = query.where(func.lower(User.email) == func.lower(value))
        else:
            region = self.environment.settings.get("phone_region")
            query = query.where(User.phone == (identity.normalize_phone(value, region) or value))
        # Locked like prefetch's users, so a concurrent merge waits for this batch (R-ID-8).
        found = list(self.session.scalars(query.limit(2).with_for_update(key_share=True)))
        if not found:
            raise Failed("lookup_not_found", f"no user has {kind} {value!r}", "resolve")
        if len(found) > 1:
            raise Failed("lookup_ambiguous", f"several users have {kind} {value!r}", "resolve")
        self._remember(found[0])
        return found[0]

    def _create(self, user_id: str | None, message_id: str) -> User:
        data = {} if user_id is None else {"user_id": user_id}
        user = users.create_user(
            self.session,
            environment=self.environment,
            data=data,
            source=users.ChangeSource(self.source, message_id),
            flush=False,  # the batch's new users are inserted together
            user_id_is_free=True,  # every caller has just found no holder of user_id
            id=self.new_id(User),
            add=self.users_later is None,
        )
        if self.users_later is not None:
            self.users_later.append(user)
        self._remember(user)
        return user

    def _attach_anonymous_id(self, user: User, value: str) -> None:
        self.by_anonymous_id[value] = user
        if self.identities_later is not None:
            self.identities_later.append((user, value))
            return
        self.session.add(
            Identity(
                id=self.new_id(Identity),
                environment_id=self.environment.id,
                user=user,
                kind="anonymous_id",
                value=value,
            )
        )

    def _merge(self, source: User, target: User, reason: str) -> None:
        if self.write_pending is not None:
            self.write_pending()
        self.session.flush()
        merge_users(
            self.session,
            environment_id=self.environment.id,
            source_id=source.id,
            target_id=target.id,
            reason=reason,
            actor=self.source,
        )
        for mapping in (self.by_anonymous_id, self.by_user_key, self.by_user_id):
            for key, user in list(mapping.items()):
                if user is source:
                    if mapping is self.by_anonymous_id:
                        mapping[key] = target
                    else:
                        del mapping[key]
        self.session.refresh(target)

    def resolve(self, keys: Keys, message_id: str, warnings: list[dict[str, Any]]) -> User:
        """The user a message applies to, creating or merging as R-ID-2..5 say."""
        if keys.lookup_error:
            raise Failed("lookup_invalid", keys.lookup_error, "resolve")
        found = self._by_user_key(keys.user_key) if keys.user_key else None
        if found is None and keys.lookup is not None:
            found = self._by_lookup(*keys.lookup)
        if found is None and keys.anonymous_id:
            device = self._by_anonymous_id(keys.anonymous_id)
            # A device of someone with another user_id is not this person (R-ID-5).
            if device is not None and (
                keys.user_id is None or device.user_id in (None, keys.user_id)
            ):
                found = device
        if keys.user_id:
            target = self._with_user_id(found, keys.user_id, message_id, warnings)
        else:
            target = found or self._create(None, message_id)
        if keys.anonymous_id:
            self._claim_anonymous_id(target, keys.anonymous_id, warnings)
        return target

    def _with_user_id(
        self, found: User | None, user_id: str, message_id: str, warnings: list[dict[str, Any]]
    ) -> User:
        owner = self._by_user_id(user_id)
        if found is None or found is owner:
            return owner or self._create(user_id, message_id)
        if found.user_id is None:
            if owner is None:  # the person the other keys name is identified now
                found.user_id = user_id
                self._remember(found)
                return found
            self._merge(found, owner, "identify")
            return owner
        # R-ID-5: the other keys name someone with another user_id (a shared device, an agent
        # logged in as a customer): the message is theirs, the other user is left alone.
        warnings.append(
            {
                "code": "identity_conflict",
                "message": f"the message's keys point to user {found.id} (another user_id); "
                f"it was applied to the user with userId {user_id!r}",
            }
        )
        return owner or self._create(user_id, message_id)

    def _claim_anonymous_id(
        self, target: User, anonymous_id: str, warnings: list[dict[str, Any]]
    ) -> None:
        holder = self._by_anonymous_id(anonymous_id)
        if holder is None:
            self._attach_anonymous_id(target, anonymous_id)
        elif holder is not target:
            if holder.user_id is None:
                self._merge(holder, target, "identify")  # R-ID-4: anonymous -> identified
            else:
                warnings.append(
                    {
                        "code": "identity_conflict",
                        "message": f"anonymousId {anonymous_id!r} belongs to user {holder.id} "
                        "(another user_id); it was not moved",
                    }
                )

    def alias(
        self, previous_id: str, keys: Keys, message_id: str, warnings: list[dict[str, Any]]
    ) -> User:
        """`alias(previousId -> userId)`: the earlier identity becomes, or merges into, userId's.

        The message's own anonymousId, if any, is the device it was sent from: it goes to the
        same user, as with identify.
        """
        target = self._alias_target(previous_id, keys, message_id, warnings)
        if keys.anonymous_id and keys.anonymous_id != previous_id:
            self._claim_anonymous_id(target, keys.anonymous_id, warnings)
        return target

    def _alias_target(
        self, previous_id: str, keys: Keys, message_id: str, warnings: list[dict[str, Any]]
    ) -> User:
        if not keys.user_id:
            raise Failed("missing_user_id", "alias needs the new userId", "resolve")
        previous = self._by_user_id(previous_id) or self._by_anonymous_id(previous_id)
        owner = self._by_user_id(keys.user_id)
        if previous is None:  # nothing known under previousId: remember it as the user's device
            target = owner or self._create(keys.user_id, message_id)
            self._claim_anonymous_id(target, previous_id, warnings)
            return target
        if previous is owner:
            return owner
        if previous.user_id is None:
            if owner is None:
                previous.user_id = keys.user_id
                self._remember(previous)
                return previous
            self._merge(previous, owner, "alias")
            return owner
        warnings.append(
            {
                "code": "identity_conflict",
                "message": f"previousId {previous_id!r} is user {previous.id}, who has another "
                "user_id; two identified users are only merged explicitly",
            }
        )
        return owner or self._create(keys.user_id, message_id)
