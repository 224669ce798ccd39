"""Per-user memory: storing, searching, updating, deleting, history, inference with a scripted
model, async mode, and isolation between users and between apps."""

from __future__ import annotations

import json

import pytest

from mdb_sync.exceptions import AIServiceError

pytest_plugins = ("openai_server",)


@pytest.fixture
def make_memory(engine, llm_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.delenv("MDB_LLM_BASE_URL", raising=False)

    def build(slug="mem", **memory_config):
        engine.register_app(
            {
                "slug": slug,
                "llm_config": {
                    "enabled": True,
                    "provider": "openai_compatible",
                    "base_url": llm_server.base_url,
                    "max_retries": 0,
                },
                "memory_config": {"enabled": True, "infer": False, **memory_config},
            }
        )
        return engine.get_memory_service(slug)

    return build


def texts(results):
    return [r["memory"] for r in results]


def test_messages_are_stored_searched_and_listed(make_memory, raw_db):
    memory = make_memory()
    added = memory.add(
        [
            {"role": "system", "content": "ignored"},
            {"role": "user", "content": "I love hiking in the mountains"},
            {"role": "assistant", "content": "Mountains are great for hiking"},
        ],
        user_id="alice",
        metadata={"source": "chat"},
    )
    assert [r["event"] for r in added["results"]] == ["ADD", "ADD"]
    memory.add("My favourite food is ramen", user_id="alice")
    found = memory.search("what food does alice like", user_id="alice", limit=1)
    assert texts(found) == ["My favourite food is ramen"]
    assert 0 <= found[0]["score"] <= 1
    listed = memory.get_all("alice")
    assert texts(listed)[0] == "My favourite food is ramen", "newest first"
    assert {m["metadata"].get("role") for m in listed} == {"user", "assistant"}
    assert listed[-1]["metadata"] == {"source": "chat", "role": "user"}
    stored = raw_db["mem_memories"].find_one({"memory": "My favourite food is ramen"})
    assert stored["app_id"] == "mem" and stored["user_id"] == "alice"
    assert "embedding" not in listed[0]


def test_update_delete_and_history(make_memory):
    memory = make_memory()
    [added] = memory.add("I live in Paris", user_id="bob")["results"]
    memory_id = added["id"]
    updated = memory.update(memory_id, {"content": "I live in Lyon"}, user_id="bob")
    assert updated["memory"] == "I live in Lyon"
    assert texts(memory.search("where does bob live, Lyon?", user_id="bob")) == ["I live in Lyon"]
    memory.update(memory_id, "I live in Nice", user_id="bob")
    assert memory.delete(memory_id, user_id="bob") is True
    assert memory.get(memory_id, user_id="bob") is None
    assert memory.delete(memory_id, user_id="bob") is False
    assert memory.history(memory_id, user_id="eve") == []  # another user's: nothing
    events = memory.history(memory_id, user_id="bob")
    assert [e["event"] for e in events] == ["ADD", "UPDATE", "UPDATE", "DELETE"]
    assert [(e["old_memory"], e["new_memory"]) for e in events] == [
        (None, "I live in Paris"),
        ("I live in Paris", "I live in Lyon"),
        ("I live in Lyon", "I live in Nice"),
        ("I live in Nice", None),
    ]


def test_one_users_memories_never_reach_another(make_memory):
    memory = make_memory()
    [secret] = memory.add("Alice's bank PIN is 1234", user_id="alice")["results"]
    memory.add("Carol likes tea", user_id="carol")
    assert texts(memory.search("bank PIN", user_id="carol", limit=10)) == ["Carol likes tea"]
    assert texts(memory.get_all("carol")) == ["Carol likes tea"]
    assert memory.get(secret["id"], user_id="carol") is None
    with pytest.raises(AIServiceError, match="not found"):
        memory.update(secret["id"], "hacked", user_id="carol")
    assert memory.delete(secret["id"], user_id="carol") is False
    assert memory.delete_all("carol") == 1
    assert texts(memory.get_all("alice")) == ["Alice's bank PIN is 1234"]


def test_apps_keep_their_own_memories(make_memory):
    first = make_memory("mem_one")
    second = make_memory("mem_two")
    [note] = first.add("The launch code is blue", user_id="dave")["results"]
    assert second.get_all("dave") == []
    assert second.search("launch code", user_id="dave") == []
    assert second.get(note["id"], all_users=True) is None
    assert second.delete(note["id"], all_users=True) is False
    assert texts(first.get_all("dave")) == ["The launch code is blue"]


def test_bad_input_is_refused(make_memory):
    memory = make_memory()
    with pytest.raises(ValueError, match="user_id"):
        memory.add("x", user_id="")
    with pytest.raises(ValueError, match="user_id"):
        memory.search("x", user_id=None)
    with pytest.raises(ValueError, match="messages"):
        memory.add([], user_id="u")
    with pytest.raises(ValueError, match="invalid memory id"):
        memory.get("not-an-id", user_id="u")
    with pytest.raises(ValueError, match="filter key"):
        memory.search("x", user_id="u", filters={"$where": "1"})
    with pytest.raises(ValueError, match="non-empty"):
        memory.update("0" * 24, "  ", user_id="u")


def test_metadata_filters_and_threshold(make_memory):
    memory = make_memory(similarity_threshold=0.75)
    memory.add("green tea in the morning", user_id="eve", metadata={"topic": "drinks"})
    memory.add("green shoes for running", user_id="eve", metadata={"topic": "clothes"})
    found = memory.search("green tea", user_id="eve", filters={"topic": "clothes"}, threshold=0)
    assert texts(found) == ["green shoes for running"]
    strong = memory.search("green tea in the morning", user_id="eve")
    assert texts(strong) == ["green tea in the morning"], "the weaker match is below 0.75"


def scripted_brain(facts, decide):
    """Two chat replies: the extracted ``facts``, then the decision built by ``decide``."""

    def reply(body):
        system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
        if "durable facts" in system:
            return json.dumps({"facts": facts})
        shown = json.loads(body["messages"][-1]["content"])
        return json.dumps({"memory": decide(shown)})

    return reply, reply


def test_inference_adds_updates_and_deletes(make_memory, llm_server):
    memory = make_memory(infer=True)
    llm_server.script_chat(
        *scripted_brain(
            ["Likes pizza", "Works as a nurse"],
            lambda shown: [
                {"id": "new1", "text": "Likes pizza", "event": "ADD"},
                {"id": "new2", "text": "Works as a nurse", "event": "ADD"},
            ],
        )
    )
    first = memory.add("I like pizza and I work as a nurse", user_id="frank")
    assert sorted(texts(first["results"])) == ["Likes pizza", "Works as a nurse"]
    ids = {m["memory"]: m["id"] for m in memory.get_all("frank")}

    def decide(shown):
        alias = {m["text"]: m["id"] for m in shown["existing_memories"]}
        assert set(alias) == {"Likes pizza", "Works as a nurse"}, "only frank's memories"
        return [
            {
                "id": alias["Likes pizza"],
                "text": "Likes pizza, especially margherita",
                "event": "UPDATE",
            },
            {"id": alias["Works as a nurse"], "event": "DELETE"},
            {"id": "new", "text": "Works as a teacher", "event": "ADD"},
        ]

    llm_server.script_chat(*scripted_brain(["Loves margherita", "Is now a teacher"], decide))
    second = memory.add("I now teach; margherita is my favourite", user_id="frank")
    events = {r["event"]: r for r in second["results"]}
    assert events["UPDATE"]["previous_memory"] == "Likes pizza"
    assert events["DELETE"]["memory"] == "Works as a nurse"
    assert sorted(texts(memory.get_all("frank"))) == [
        "Likes pizza, especially margherita",
        "Works as a teacher",
    ]
    assert [e["event"] for e in memory.history(ids["Likes pizza"], "frank")] == ["ADD", "UPDATE"]
    assert [e["event"] for e in memory.history(ids["Works as a nurse"], "frank")] == [
        "ADD",
        "DELETE",
    ]


def test_the_model_cannot_touch_memories_it_was_not_shown(make_memory, llm_server):
    memory = make_memory(infer=True)
    [other] = memory.add("Grace owns a red car", user_id="grace", infer=False)["results"]
    memory.add("Heidi drinks coffee", user_id="heidi", infer=False)
    llm_server.script_chat(
        *scripted_brain(
            ["Drinks coffee daily"],
            lambda shown: [
                {"id": other["id"], "event": "DELETE"},
                {"id": "42", "event": "DELETE"},
                {"id": "0", "text": "Drinks coffee daily", "event": "UPDATE"},
                {"id": "0", "event": "DELETE"},
                {"id": "new", "text": "Heidi drinks coffee", "event": "ADD"},
            ],
        )
    )
    result = memory.add("I drink coffee every day", user_id="heidi")
    assert [r["event"] for r in result["results"]] == ["UPDATE"], "one event per memory, no dup"
    assert texts(memory.get_all("grace")) == ["Grace owns a red car"]
    assert texts(memory.get_all("heidi")) == ["Drinks coffee daily"]


def test_no_facts_means_no_change(make_memory, llm_server):
    memory = make_memory(infer=True)
    llm_server.script_chat(json.dumps({"facts": []}))
    assert memory.add("hello!", user_id="ivan") == {"results": []}
    assert memory.get_all("ivan") == []
    assert len(llm_server.recorded("chat/completions")) == 1


def test_async_mode_queues_adds(make_memory):
    memory = make_memory(async_mode=True)
    assert memory.add("Queued fact", user_id="judy") == {"results": [], "status": "queued"}
    assert memory.flush(timeout=30) is True
    assert texts(memory.get_all("judy")) == ["Queued fact"]


def graph_brain(facts, decide, relations, obsolete=None):
    """Chat replies of an inferring add with graph memory: facts, the facts' decision, the
    relations, and — when the user has related relations — the obsolete ones (``obsolete``
    gets what the model was shown and returns the ids to drop)."""

    def reply(body):
        system = " ".join(m["content"] for m in body["messages"] if m["role"] == "system")
        shown = body["messages"][-1]["content"]
        if "durable facts" in system:
            return json.dumps({"facts": facts})
        if "knowledge graph of what the user" in system:
            return json.dumps({"relations": relations})
        if "existing relations" in system:
            return json.dumps({"obsolete": obsolete(json.loads(shown))})
        return json.dumps({"memory": decide(json.loads(shown))})

    return (reply,) * (4 if obsolete else 3)


def test_graph_memory_keeps_relations_and_drops_obsolete_ones(make_memory, llm_server, raw_db):
    memory = make_memory(infer=True, enable_graph=True)
    llm_server.script_chat(
        *graph_brain(
            ["Lives in Paris", "Works at Acme"],
            lambda shown: [{"id": "n1", "text": "Lives in Paris", "event": "ADD"}],
            [
                {"source": "User", "relationship": "lives in", "destination": "Paris"},
                {"source": "user", "relationship": "works_at", "destination": "acme"},
                {"source": "acme", "relationship": "is_in", "destination": "paris"},
                {"source": "  ", "relationship": "x", "destination": "y"},  # dropped
            ],
        )
    )
    first = memory.add("I live in Paris and work at Acme, an agency there", user_id="judy")
    assert first["relations"]["deleted"] == []
    assert first["relations"]["added"] == [
        {"source": "user", "relationship": "lives_in", "destination": "paris"},
        {"source": "user", "relationship": "works_at", "destination": "acme"},
        {"source": "acme", "relationship": "is_in", "destination": "paris"},
    ]
    stored = raw_db["mem_memories_graph"].find_one({"destination": "acme"})
    assert stored["app_id"] == "mem" and stored["user_id"] == "judy" and stored["embedding"]

    memory.add("Karl lives in Paris too", user_id="karl", infer=False)  # another user

    def obsolete(shown):
        existing = {(r["source"], r["relationship"], r["destination"]): r["id"]
                    for r in shown["existing_relations"]}  # fmt: skip
        assert {s for s, _, _ in existing} <= {"user", "acme"}, "only judy's relations"
        return [existing[("user", "lives_in", "paris")], "99", "not-an-id"]

    llm_server.script_chat(
        *graph_brain(
            ["Moved to Lyon"],
            lambda shown: [{"id": "n", "text": "Moved to Lyon", "event": "ADD"}],
            [{"source": "user", "relationship": "lives_in", "destination": "lyon"}],
            obsolete,
        )
    )
    second = memory.add("I moved to Lyon", user_id="judy")
    assert second["relations"] == {
        "added": [{"source": "user", "relationship": "lives_in", "destination": "lyon"}],
        "deleted": [{"source": "user", "relationship": "lives_in", "destination": "paris"}],
    }
    assert {(r["source"], r["destination"]) for r in memory.get_relations("judy")} == {
        ("user", "lyon"), ("user", "acme"), ("acme", "paris")}  # fmt: skip

    # A search finds the nearest relations, then follows the graph from their entities.
    found = memory.search_relations("user lives_in lyon", user_id="judy", limit=1, depth=0)
    assert [(r["destination"], "score" in r) for r in found] == [("lyon", True)]
    around = memory.search_relations("user lives_in lyon", user_id="judy", limit=10, depth=2)
    assert {r["destination"] for r in around} == {"lyon", "acme", "paris"}
    assert memory.get_relations("karl") == [] and memory.search_relations("paris", "karl") == []

    assert len(llm_server.recorded("chat/completions")) == 7  # 3 + 4: nothing left over
    memory.delete_all("judy")
    assert memory.get_relations("judy") == []


def test_graph_memory_is_off_unless_enabled(make_memory):
    memory = make_memory()
    with pytest.raises(AIServiceError, match="enable_graph"):
        memory.get_relations("judy")
    graph = make_memory("graphs", enable_graph=True)
    with pytest.raises(ValueError, match="depth"):
        graph.search_relations("x", "judy", depth=9)
    assert graph.add("stored as is", user_id="judy")["results"][0]["event"] == "ADD"
    assert graph.get_relations("judy") == []  # without infer, no model: no relations
