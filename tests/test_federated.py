"""The federated building blocks: the documented split rule, pooled standardisation, process launch errors."""

from __future__ import annotations

import socket
from pathlib import Path

import kubernetes_validate
import numpy as np
import psutil
import pytest
import tomli_w
import torch
import yaml
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.common.config import get_fused_config_from_dir, parse_config_args
from pydantic import ValidationError

from conveyor.federated.journal import FederationError, Journal
from conveyor.federated.launcher import APP_DIR, LocalFederation
from conveyor.federated.params import MANUAL_RUN_DIR, FederatedParams
from conveyor.federated.server_app import TrackedFedAvg
from conveyor.federated.task import (
    MIN_SITE_ROWS,
    ModelSpec,
    ProximalClassifier,
    breast_cancer_frame,
    build_model,
    dirichlet_partition,
    feature_moments,
    load_rows,
    pooled_standardization,
    train_local,
    write_site_data,
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class TestSplitRule:
    labels = breast_cancer_frame()["target"].to_numpy()

    def test_sites_are_disjoint_cover_every_row_and_are_large_enough(self):
        sites = dirichlet_partition(self.labels, 4, alpha=0.5, seed=7)
        rows = np.concatenate(sites)
        assert len(rows) == len(set(rows)) == len(self.labels)
        assert min(len(site) for site in sites) >= MIN_SITE_ROWS

    def test_same_seed_same_split_other_seed_other_split(self):
        first = dirichlet_partition(self.labels, 3, alpha=0.5, seed=1)
        again = dirichlet_partition(self.labels, 3, alpha=0.5, seed=1)
        other = dirichlet_partition(self.labels, 3, alpha=0.5, seed=2)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))

    def test_small_alpha_skews_labels_across_sites(self):
        def positive_shares(alpha: float) -> list[float]:
            return [self.labels[site].mean() for site in dirichlet_partition(self.labels, 3, alpha, seed=42)]

        skewed, iid = positive_shares(0.3), positive_shares(1000.0)
        assert max(skewed) - min(skewed) > 0.3 > max(iid) - min(iid)

    def test_too_many_sites_for_the_data_is_refused_with_the_reason(self):
        with pytest.raises(ValueError, match="use fewer sites or a larger alpha"):
            dirichlet_partition(self.labels, 40, alpha=0.1, seed=0)

    def test_site_files_and_hold_out_partition_the_dataset(self, tmp_path):
        data = write_site_data(tmp_path, 3, alpha=0.5, seed=42)
        parts = [load_rows(path)[0] for path in [*data.site_paths, data.test_path]]
        everything = torch.cat(parts)
        assert len(everything) == len(self.labels) == len(torch.unique(everything, dim=0))
        assert data.site_rows == [len(part) for part in parts[:-1]]


def test_pooled_standardization_equals_standardizing_all_rows_together(tmp_path):
    data = write_site_data(tmp_path, 3, alpha=0.5, seed=42)
    sites = [load_rows(path)[0] for path in data.site_paths]
    mean, std = pooled_standardization([feature_moments(features) for features in sites])
    central = build_model(30, ModelSpec(), seed=0)
    central.set_standardization(torch.cat(sites))
    torch.testing.assert_close(mean, central.feature_mean, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(std, central.feature_std, rtol=1e-4, atol=1e-4)


def test_fedprox_keeps_local_weights_near_the_received_ones(tmp_path):
    features, labels = load_rows(write_site_data(tmp_path, 3, alpha=0.5, seed=42).site_paths[1])

    def drift(mu: float) -> float:
        model = build_model(30, ModelSpec(learning_rate=0.05), seed=0, kind=ProximalClassifier)
        model.set_standardization(features)
        model.anchor(mu)
        train_local(model, features, labels, epochs=5, batch_size=8, seed=0)
        pairs = zip(model.parameters(), model.received, strict=True)
        return sum(float((p.detach() - g).pow(2).sum()) for p, g in pairs)

    assert drift(10.0) < 0.5 * drift(0.0)


class TestRoundMinimum:
    """The strategy closes a round with the sites that replied, or fails naming the ones that did not."""

    @staticmethod
    def replies() -> list[Message]:
        asked = [
            Message(RecordDict({"config": ConfigRecord()}), dst_node_id=n, message_type="train")
            for n in (5, 6)
        ]
        trained = RecordDict(
            {
                "arrays": ArrayRecord([np.ones(2)]),
                "site": ConfigRecord({"site-id": 0}),
                "metrics": MetricRecord({"train-loss": 0.5, "num-examples": 10}),
            }
        )
        return [
            Message(trained, reply_to=asked[0]),
            Message(Error(code=0, reason="crashed"), reply_to=asked[1]),
        ]

    def strategy(self, minimum: int) -> TrackedFedAvg:
        strategy = TrackedFedAvg(sites={6: "site-1"}, min_train_nodes=minimum, min_available_nodes=minimum)
        strategy.rounds[1] = {"started": 0.0, "asked": ["site-0", "site-1", "site-2"]}
        return strategy

    def test_the_round_closes_with_the_sites_that_replied(self):
        strategy = self.strategy(minimum=1)
        arrays, metrics = strategy.aggregate_train(1, self.replies())
        assert arrays is not None and metrics["train-loss"] == 0.5
        assert strategy.rounds[1]["trained"] == ["site-0"]
        assert strategy.rounds[1]["missing"] == ["site-1", "site-2"]

    def test_below_the_minimum_the_round_fails_naming_the_missing_sites(self):
        with pytest.raises(
            FederationError, match="1 of 3 sites replied, minimum is 2; no valid reply from site-1, site-2"
        ):
            self.strategy(minimum=2).aggregate_train(1, self.replies())


class TestParams:
    def test_minimum_above_the_number_of_sites_is_refused(self):
        with pytest.raises(ValidationError, match="min_sites"):
            FederatedParams(sites=2, min_sites=3)

    def test_faults_must_name_existing_sites(self):
        with pytest.raises(ValidationError, match="faults name sites"):
            FederatedParams(sites=3, faults={5: "crash"})


class TestRunConfig:
    """The Flower app's run config comes from FederatedParams: its keys and its defaults."""

    def test_what_the_apps_read_by_default_is_federated_params_defaults(self):
        read = get_fused_config_from_dir(APP_DIR, {})  # as the ServerApp / ClientApp get it, no overrides
        assert read == FederatedParams().run_config(MANUAL_RUN_DIR, f"{MANUAL_RUN_DIR}/data/test.csv"), (
            "conveyor/federated/pyproject.toml is stale: run `python -m conveyor.federated.params`"
        )
        assert FederatedParams.from_run_config(read) == FederatedParams()

    def test_a_runs_parameters_reach_the_apps_unchanged(self, tmp_path):
        params = FederatedParams(
            sites=4,
            rounds=7,
            min_sites=3,
            fraction_evaluate=0.5,
            strategy="fedprox",
            proximal_mu=0.5,
            model=ModelSpec(hidden=8, layers=1, learning_rate=0.05),
            seed=3,
            round_timeout_s=30,
        )
        overrides = tmp_path / "run_config.toml"  # as LocalFederation.submit hands it to `flwr run`
        overrides.write_text(tomli_w.dumps(params.run_config("/runs/r1", "/runs/r1/test.csv")))
        read = get_fused_config_from_dir(APP_DIR, parse_config_args([str(overrides)]))
        assert FederatedParams.from_run_config(read) == params
        assert (read["run-dir"], read["test-data"]) == ("/runs/r1", "/runs/r1/test.csv")


class TestLaunchErrors:
    def test_a_port_in_use_is_named_and_nothing_starts(self, tmp_path):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            federation = LocalFederation(tmp_path, [{"site-id": 0, "data-path": "x.csv"}], base_port=port)
            with pytest.raises(FederationError, match=f"port {port} on 127.0.0.1 is already in use"):
                federation.__enter__()
        assert federation.processes == {} and federation.stopped_pids == []

    def test_a_superlink_that_does_not_come_up_fails_clearly_and_is_stopped(self, tmp_path):
        federation = LocalFederation(tmp_path, [], startup_timeout_s=0.05)
        with pytest.raises(FederationError, match="superlink did not listen on ports"):
            federation.__enter__()
        assert federation.stopped_pids and not any(alive(pid) for pid in federation.stopped_pids)


class TestJournal:
    def test_a_failed_event_surfaces_its_reason(self, tmp_path):
        journal = Journal(tmp_path / "journal.jsonl")
        journal.write("failed", reason="round 1: no valid reply from site-2")
        with pytest.raises(FederationError, match="site-2"):
            journal.wait_for(lambda e: e["event"] == "finished", 5, "end", check_alive=lambda: None)

    def test_waiting_past_the_timeout_names_what_was_awaited(self, tmp_path):
        journal = Journal(tmp_path / "journal.jsonl")
        with pytest.raises(FederationError, match="no end of round 3 within"):
            journal.wait_for(lambda e: False, 0.2, "end of round 3", check_alive=lambda: None, poll_s=0.05)


class TestKubernetesManifests:
    MANIFESTS = sorted((Path(__file__).parent.parent / "deployments/kubernetes/flower").glob("*.yaml"))

    def documents(self) -> list[dict]:
        return [doc for path in self.MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]

    def test_every_manifest_is_valid_kubernetes(self):
        docs = self.documents()
        assert {doc["kind"] for doc in docs} >= {"Service", "Deployment", "PersistentVolumeClaim"}
        for doc in docs:
            kubernetes_validate.validate(doc, "1.31", strict=True)

    def test_one_supernode_per_site_and_the_pinned_flower_accepts_every_command_line(self):
        from flwr.server.app import _parse_args_run_superlink
        from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

        parsers = {
            "flower-superlink": _parse_args_run_superlink(),
            "flower-supernode": _parse_args_run_supernode(),
        }
        sites = []
        for doc in self.documents():
            if doc["kind"] != "Deployment":
                continue
            container = doc["spec"]["template"]["spec"]["containers"][0]
            args = parsers[container["command"][0]].parse_args(container["args"])
            if container["command"][0] == "flower-supernode":
                assert args.superlink == "flower-superlink:9092" and args.root_certificates
                sites.append(args.node_config)
            else:
                assert not args.insecure and args.ssl_certfile and args.enable_supernode_auth
        assert sites == [f'site-id={i} data-path="/data/site.csv"' for i in range(3)]
