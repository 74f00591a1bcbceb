"""The character book in the database: one user's characters are bounded, oldest forgotten first."""

from __future__ import annotations

from services.characters import MAX_CHARACTERS_PER_USER, CharacterProfile, DatabaseCharacterBook


def profile(name: str) -> CharacterProfile:
    return CharacterProfile(
        name=name, summary="s", appearance="a", personality="p", art_style="3D", visual_description=f"{name} in blue"
    )


async def test_the_book_keeps_a_users_newest_characters(database: str) -> None:
    book = DatabaseCharacterBook()
    await book.remember("test:other", profile("Neighbour"))
    names = [f"Hero{i}" for i in range(MAX_CHARACTERS_PER_USER + 1)]
    for name in names:
        await book.remember("test:1", profile(name))
    assert await book.names("test:1") == names[1:]
    assert await book.find("test:1", "hero0") is None

    await book.remember("test:1", profile("Hero1"))  # replacing a character makes it the newest
    await book.remember("test:1", profile("Newcomer"))
    kept = await book.names("test:1")
    assert len(kept) == MAX_CHARACTERS_PER_USER and "Hero2" not in kept
    assert kept[-2:] == ["Hero1", "Newcomer"]
    last = await book.find("test:1", "last")
    assert last is not None and last.name == "Newcomer"
    assert await book.names("test:other") == ["Neighbour"]
