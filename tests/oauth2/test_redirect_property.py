"""Property: whatever redirect URI an attacker sends, the provider redirects only to a URI
registered for that client, character for character."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatehouse.oauth2.authorize import ErrorPage, Redirect
from gatehouse.storage.engine import Database
from tests.oauth2.harness import ALICE, APP1, auth_query, make_provider

REGISTERED = APP1.redirect_uris[0]
near = st.one_of(
    st.text(max_size=60),
    st.builds(lambda s: REGISTERED + s, st.text(min_size=1, max_size=20)),
    st.builds(lambda s: s + REGISTERED, st.text(min_size=1, max_size=20)),
    st.builds(lambda n: REGISTERED[:n], st.integers(0, len(REGISTERED) - 1)),
    st.sampled_from(
        [
            REGISTERED.upper(),
            REGISTERED.replace("https", "http"),
            REGISTERED + "/",
            REGISTERED + "#x",
            REGISTERED.replace("app1.example", "app1.example.evil.example"),
            "https://app1.example@evil.example/cb",
        ]
    ),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    # an empty value counts as omitted (the client's only URI is meant): not an attack
    redirect_uri=near.filter(lambda u: u not in (REGISTERED, "")),
    prompt=st.sampled_from(["", "none"]),
)
def test_no_redirect_to_an_unregistered_uri(oauth2_db: str, redirect_uri: str, prompt: str) -> None:
    async def go() -> None:
        db = Database(oauth2_db)
        try:
            provider = make_provider(db).provider
            query = {**auth_query(APP1, prompt=prompt), "redirect_uri": redirect_uri}
            for user in (None, ALICE):
                outcome = await provider.authorize(query, user, "granted", "p")
                if isinstance(outcome, Redirect):
                    assert outcome.location.startswith(REGISTERED + "?"), outcome
                else:
                    assert isinstance(outcome, ErrorPage), outcome
        finally:
            await db.dispose()

    asyncio.run(go())
