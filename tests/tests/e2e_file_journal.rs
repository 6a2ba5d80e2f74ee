//! End to end: a rollout journaled to a real file is killed, then resumed by a new "process"
//! that only has the file, against a backend picked at run time.

use rollout_core::{Change, FileJournal, Outcome, Run, Spec, erased::BoxCluster, roll};
use rollout_sim::{CrashJournal, Flavor, SimBuilder, SimCluster};

fn backend(flavor: &str) -> (BoxCluster, SimCluster) {
    let flavor: Flavor = flavor.parse().unwrap();
    let sim = SimBuilder::new(flavor).seed(3).build().unwrap();
    (BoxCluster::new(sim.clone()), sim)
}

#[tokio::test(start_paused = true)]
async fn a_killed_rollout_resumes_from_its_journal_file() {
    for flavor in ["pegasus", "openmldb"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.jsonl");
        let (cluster, sim) = backend(flavor);
        let spec = Spec::new(Change::Upgrade {
            version: "2.0".into(),
        });

        let first = CrashJournal::wrap(FileJournal::new(&path), 12);
        let killed = first.race(roll(&cluster, &spec, Run::new(&first))).await;
        assert!(
            killed.is_none(),
            "{flavor}: finished before the kill: {killed:?}"
        );
        drop(first);
        assert!(
            !sim.truth().knobs_restored,
            "{flavor}: the killed run left its knobs set"
        );

        // A killed process would have left its lock behind, naming a pid that is gone.
        std::fs::write(
            dir.path().join("rollout.jsonl.lock"),
            "pid 4294967 rollout of the killed run",
        )
        .unwrap();
        // A new process: only the files are left.
        let journal = FileJournal::new(&path);
        let report = roll(&cluster, &spec, Run::new(&journal)).await.unwrap();
        assert_eq!(report.outcome, Outcome::Completed, "{flavor}");
        assert!(report.resumed, "{flavor}");
        let truth = sim.truth();
        assert!(truth.knobs_restored, "{flavor}");
        assert!(
            truth.restarts.values().all(|&n| n == 1),
            "{flavor}: {:?}",
            truth.restarts
        );
        let summary =
            std::fs::read_to_string(dir.path().join("rollout.jsonl.summary.json")).unwrap();
        assert!(summary.contains("completed"), "{flavor}: {summary}");
        assert!(!dir.path().join("rollout.jsonl.lock").exists(), "{flavor}");
        // Every node now runs the new version: rolling the same upgrade again does nothing.
        let again = roll(&cluster, &spec, Run::new(&journal)).await.unwrap();
        assert!(again.rolled.is_empty(), "{flavor}: {:?}", again.rolled);
        assert!(sim.truth().restarts.values().all(|&n| n == 1), "{flavor}");
    }
}
