//! Figures for SWIM membership with default timings, as a markdown report.
//!
//! `cargo bench --bench swim` runs every scenario; name some to run only
//! those: `detect traffic rejoin loss join scale real procs`. Simulated scenarios
//! run in virtual time (deterministic per seed); `real` runs in-process
//! nodes over loopback UDP and `procs` runs real `dnd` processes, both in
//! real time.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dnd::actors::membership::ListMembers;
use dnd::config::Config;
use dnd::member::MemberState;
use dnd::node::Node;
use dnd::swim::sim::Sim;
use dnd::swim::{suspicion, SwimConfig};

const STEP: Duration = Duration::from_millis(50);

fn t() -> Duration {
    SwimConfig::default().protocol_period
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn mean(values: &[Duration]) -> Duration {
    values.iter().sum::<Duration>() / values.len() as u32
}

fn converged(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::cluster(n, SwimConfig::default(), seed);
    sim.run_until_true(Duration::from_secs(120), STEP, Sim::converged)
        .unwrap_or_else(|| panic!("{n} nodes did not converge"));
    sim
}

fn detect() {
    println!("## Failure detection (simulated, default timings, 20 seeds per size)\n");
    println!("A random member crashes in a converged cluster. *First suspicion*: until any member suspects it. *All dead*: until every live member lists it dead.\n");
    println!("| members | first suspicion, median / mean | SWIM's e/(e−1)·T | all dead, median / mean | suspicion floor + 3T (unconfirmed max) | false deaths |");
    println!("|---:|---|---:|---|---|---:|");
    for n in [8, 16, 32] {
        let (mut first, mut dead) = (Vec::new(), Vec::new());
        let mut false_deaths = 0;
        for seed in 0..20 {
            let mut sim = converged(n, seed);
            sim.run_for(Duration::from_secs(30));
            let victim = (seed as usize * 7 + 1) % n;
            sim.crash(victim);
            let suspected = sim
                .run_until_true(Duration::from_secs(60), STEP, |s| {
                    s.running().iter().any(|&i| {
                        s.view(i, victim)
                            .is_some_and(|m| m.state == MemberState::Suspect)
                    })
                })
                .expect("a suspicion");
            let all_dead = sim
                .run_until_true(Duration::from_secs(120), STEP, |s| {
                    s.all_see(victim, MemberState::Dead)
                })
                .expect("everyone declares it dead");
            first.push(suspected);
            dead.push(suspected + all_dead);
            false_deaths += sim.false_deaths();
        }
        let floor = suspicion::min_timeout(4, n, t());
        let e = std::f64::consts::E;
        println!(
            "| {n} | {} / {} | {} | {} / {} | {} ({}) | {false_deaths} |",
            secs(median(&mut first)),
            secs(mean(&first)),
            secs(t().mul_f64(e / (e - 1.0))),
            secs(median(&mut dead)),
            secs(mean(&dead)),
            secs(floor + 3 * t()),
            secs(floor * 6 + 3 * t()),
        );
    }
    println!("\nThe first suspicion comes at the end of the first failed probe's period, so it trails the paper's first *probe* by up to one period.\n");
}

fn traffic() {
    println!("## Gossip traffic per member (simulated, 120 s of steady state)\n");
    println!("| members | bytes/s sent | datagrams/s sent | largest datagram | goal |");
    println!("|---:|---:|---:|---:|---|");
    for n in [8, 16, 32, 64] {
        let mut sim = converged(n, 1);
        sim.run_for(Duration::from_secs(60));
        let (bytes0, count0) = sim.traffic();
        let window = Duration::from_secs(120);
        sim.run_for(window);
        let (bytes1, count1) = sim.traffic();
        let per = (n as f64) * window.as_secs_f64();
        println!(
            "| {n} | {:.0} | {:.2} | {} B | < 1000 B/s, < 12 datagrams/s, ≤ 1400 B |",
            (bytes1 - bytes0) as f64 / per,
            (count1 - count0) as f64 / per,
            sim.max_datagram()
        );
    }
    println!();
}

fn with_dead_pings(on: bool) -> SwimConfig {
    SwimConfig {
        dead_probe_interval: if on {
            SwimConfig::default().dead_probe_interval
        } else {
            Duration::ZERO
        },
        ..SwimConfig::default()
    }
}

fn converged_with(n: usize, config: SwimConfig, seed: u64) -> Sim {
    let mut sim = Sim::cluster(n, config, seed);
    sim.run_until_true(Duration::from_secs(120), STEP, Sim::converged)
        .unwrap_or_else(|| panic!("{n} nodes did not converge"));
    sim
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on (1 s)"
    } else {
        "off (as before)"
    }
}

fn rejoin() {
    println!("## A healed partition rejoining (simulated, 20 seeds per row)\n");
    println!("A converged cluster is cut in two (the first `a` members from the rest) and kept apart until every member on each side lists every member of the other side dead, and at least 30 s (or healed at the last death: *held* `death`); then the cut heals. *Heal → all alive*: until every member lists every member alive. Dead-member pings off is the protocol as it was before them (the same runs draw the same numbers): push-pull, every 30 s with one live and one dead member, is the only way back. Every node of the simulated cluster starts at the same instant, so their push-pull timers fall in the same 15 s window; after 30 s apart, that window has just passed when the cut heals, so *off* waits for the next one, which a real cluster (nodes started at different times) would not always do.\n");
    println!("| members | cut | held | dead-member pings | held apart, median | heal → all alive, median / mean / max | goal |");
    println!("|---:|---|---|---|---:|---|---|");
    for (n, cut) in [(5, 2), (8, 3), (16, 7)] {
        let (a, b): (Vec<usize>, Vec<usize>) = ((0..cut).collect(), (cut..n).collect());
        for (hold, hold_name) in [
            (Duration::ZERO, "death"),
            (Duration::from_secs(30), "≥ 30 s"),
        ] {
            for on in [false, true] {
                let (mut held, mut healed) = (Vec::new(), Vec::new());
                for seed in 0..20 {
                    let mut sim = converged_with(n, with_dead_pings(on), 300 + seed);
                    let cut_at = sim.now();
                    sim.partition(&a, &b);
                    let dead = |s: &Sim, i: usize, j: usize| {
                        s.view(i, j).is_some_and(|m| m.state == MemberState::Dead)
                    };
                    let apart = sim
                        .run_until_true(Duration::from_secs(120), STEP, |s| {
                            a.iter()
                                .all(|&i| b.iter().all(|&j| dead(s, i, j) && dead(s, j, i)))
                        })
                        .expect("each side lists the other dead");
                    sim.run_for(hold.saturating_sub(apart));
                    let apart = sim.now() - cut_at;
                    sim.heal();
                    let back = sim
                        .run_until_true(Duration::from_secs(120), STEP, Sim::converged)
                        .expect("the healed cluster converges");
                    held.push(apart);
                    healed.push(back);
                }
                println!(
                    "| {n} | {cut} vs {} | {hold_name} | {} | {} | {} / {} / {} | {} |",
                    n - cut,
                    on_off(on),
                    secs(median(&mut held)),
                    secs(median(&mut healed)),
                    secs(mean(&healed)),
                    secs(*healed.iter().max().expect("seeds")),
                    if on { "median ≤ 3 s" } else { "" },
                );
            }
        }
    }
    println!();
    println!("## Gossip traffic with and without dead-member pings (simulated, 120 s, per running member)\n");
    println!("*Healthy*: no member dead. *One crashed*: one member crashed and was declared dead by all at least 30 s before the window (it stays dead; the others ping it now and then). *One crashed long ago*: the same, 6 minutes after the death, when the pings have slowed down.\n");
    println!("| members | cluster | dead-member pings | bytes/s sent | datagrams/s sent |");
    println!("|---:|---|---|---:|---:|");
    for n in [8, 16] {
        for (crashed, long_ago) in [(false, false), (true, false), (true, true)] {
            for on in [false, true] {
                let mut sim = converged_with(n, with_dead_pings(on), 1);
                if crashed {
                    sim.crash(n / 2);
                    sim.run_until_true(Duration::from_secs(120), STEP, |s| {
                        s.all_see(n / 2, MemberState::Dead)
                    })
                    .expect("the crashed member is declared dead");
                }
                sim.run_for(Duration::from_secs(if long_ago { 360 } else { 30 }));
                let (bytes0, count0) = sim.traffic();
                let window = Duration::from_secs(120);
                sim.run_for(window);
                let (bytes1, count1) = sim.traffic();
                let per = sim.running().len() as f64 * window.as_secs_f64();
                println!(
                    "| {n} | {} | {} | {:.0} | {:.2} |",
                    match (crashed, long_ago) {
                        (false, _) => "healthy",
                        (true, false) => "one crashed",
                        (true, true) => "one crashed long ago",
                    },
                    on_off(on),
                    (bytes1 - bytes0) as f64 / per,
                    (count1 - count0) as f64 / per,
                );
            }
        }
    }
    println!();
}

fn loss() {
    println!("## 10% datagram loss for 5 minutes (simulated, 5 seeds per size)\n");
    println!("| members | members seen dead while alive (1 s looks) | deaths declared (every node's counter) | probes without a direct ack | probes with no ack at all |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [8, 16, 32] {
        let (mut false_deaths, mut declared, mut missed, mut failed) = (0, 0, 0, 0);
        for seed in 0..5 {
            let mut sim = converged(n, 100 + seed);
            let declared_before: u64 = sim
                .nodes
                .iter()
                .map(|n| n.metrics.swim_members_declared_dead.get())
                .sum();
            sim.faults.loss = 0.10;
            let end = sim.now() + Duration::from_secs(300);
            while sim.now() < end {
                sim.run_for(Duration::from_secs(1));
                false_deaths = false_deaths.max(sim.false_deaths());
            }
            // No member crashes here: every death declared is a false one.
            declared += sim
                .nodes
                .iter()
                .map(|n| n.metrics.swim_members_declared_dead.get())
                .sum::<u64>()
                - declared_before;
            missed += sim
                .nodes
                .iter()
                .map(|n| n.metrics.swim_probes_without_direct_ack.get())
                .sum::<u64>();
            failed += sim
                .nodes
                .iter()
                .map(|n| n.metrics.swim_probe_failures.get())
                .sum::<u64>();
        }
        println!("| {n} | {false_deaths} | {declared} | {missed} | {failed} |");
    }
    println!("\nThe loss shows in every node's `/metrics` as `dnd_swim_probes_without_direct_ack_total` and `dnd_swim_probe_failures_total`.\n");
}

fn join() {
    println!("## A join reaching every member (simulated)\n");
    println!("| members | until every member lists the newcomer alive, median of 10 | goal |");
    println!("|---:|---:|---|");
    for n in [8, 32] {
        let mut times = Vec::new();
        for seed in 0..10 {
            let mut sim = converged(n, 200 + seed);
            let seed_addr = sim.nodes[n / 2].addr;
            let newcomer = sim.add_node(vec![seed_addr]);
            let took = sim
                .run_until_true(Duration::from_secs(30), Duration::from_millis(10), |s| {
                    s.all_see(newcomer, MemberState::Alive)
                })
                .expect("the newcomer is known");
            times.push(took);
        }
        println!("| {n} | {} | < 3 s |", secs(median(&mut times)));
    }
    println!();
}

fn scale() {
    println!("## 1,000 members for 10 virtual minutes (simulated)\n");
    let wall = Instant::now();
    let mut sim = Sim::cluster(1000, SwimConfig::default(), 5);
    let mut converged_at = None;
    while sim.elapsed() < Duration::from_secs(600) {
        sim.run_for(Duration::from_secs(10));
        if converged_at.is_none() && sim.converged() {
            converged_at = Some(sim.elapsed());
        }
    }
    let took = wall.elapsed();
    println!("| wall-clock time | converged (all 1,000 see all alive) | at the end | datagrams delivered | largest datagram | goal |");
    println!("|---:|---|---|---:|---:|---|");
    println!(
        "| {} | {} | {} | {} | {} B | < 60 s wall, converges |\n",
        secs(took),
        converged_at.map_or("never".into(), |t| format!("after {} virtual", secs(t))),
        if sim.converged() {
            "converged"
        } else {
            "not converged"
        },
        sim.datagrams_delivered,
        sim.max_datagram()
    );
}

/// In-process nodes over loopback UDP with default timings.
fn real() {
    println!("## Real nodes in one process, loopback UDP, default timings\n");
    println!("One node stops (its socket closes, it answers nothing); the time until every other node lists it dead.\n");
    println!("| members | until all list it dead | join of one more, until all list it |");
    println!("|---:|---:|---:|");
    for n in [8, 16, 32] {
        let (detect, join) = actix_rt::System::new().block_on(real_cluster(n));
        println!("| {n} | {} | {} |", secs(detect), secs(join));
    }
    println!();
}

async fn real_cluster(n: usize) -> (Duration, Duration) {
    let dirs: Vec<_> = (0..=n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let config = |i: usize, seed| {
        let mut c = Config::ephemeral(dirs[i].path().to_path_buf());
        c.swim = SwimConfig::default();
        c.seed = seed;
        c
    };
    let mut nodes = vec![Node::start(config(0, None)).await.expect("start")];
    for i in 1..n {
        let seed = Some(nodes[0].gossip_addr);
        nodes.push(Node::start(config(i, seed)).await.expect("start"));
    }
    let all_alive = |nodes: &[Node], count: usize| {
        let addrs: Vec<_> = nodes.iter().map(|n| n.membership.clone()).collect();
        async move {
            for addr in addrs {
                let members = addr.send(ListMembers).await.unwrap_or_default();
                let alive = members
                    .iter()
                    .filter(|m| m.member.state == MemberState::Alive)
                    .count();
                if alive < count {
                    return false;
                }
            }
            true
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !all_alive(&nodes, n).await {
        assert!(
            Instant::now() < deadline,
            "the real cluster did not converge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let victim = nodes.remove(n / 2);
    let victim_id = victim.id;
    let stopped = Instant::now();
    victim.stop().await;
    loop {
        let mut all = true;
        for node in &nodes {
            let members = node.membership.send(ListMembers).await.unwrap_or_default();
            let dead = members
                .iter()
                .any(|m| m.member.id == victim_id && m.member.state == MemberState::Dead);
            all &= dead;
        }
        if all {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(120),
            "the stopped node was never declared dead"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let detect = stopped.elapsed();

    let joined_at = Instant::now();
    let newcomer = Node::start(config(n, Some(nodes[0].gossip_addr)))
        .await
        .expect("start");
    let newcomer_id = newcomer.id;
    nodes.push(newcomer);
    loop {
        let mut all = true;
        for node in &nodes {
            let members = node.membership.send(ListMembers).await.unwrap_or_default();
            all &= members
                .iter()
                .any(|m| m.member.id == newcomer_id && m.member.state == MemberState::Alive);
        }
        if all {
            break;
        }
        assert!(
            joined_at.elapsed() < Duration::from_secs(60),
            "the join never completed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let join = joined_at.elapsed();
    for node in nodes {
        node.stop().await;
    }
    (detect, join)
}

/// Real `dnd` processes, killed with SIGKILL.
fn procs() {
    println!("## Eight `dnd` processes, default timings\n");
    let n = 8;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|i| (17_400 + i as u16, 17_500 + i as u16))
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut children: Vec<Child> = Vec::new();
    for (i, (gossip, http)) in ports.iter().enumerate() {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dnd"));
        cmd.args([
            "--storage",
            "memory",
            "-q",
            "--port",
            &gossip.to_string(),
            "--server-port",
            &http.to_string(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join(i.to_string()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if i == 0 {
            cmd.arg("start");
        } else {
            cmd.args(["join", &format!("127.0.0.1:{}", ports[0].0)]);
        }
        children.push(cmd.spawn().expect("spawn dnd"));
    }
    let result = std::panic::catch_unwind(|| {
        let killed = procs_measure(&ports);
        let pauses = procs_pause(&ports, killed.0);
        (killed, pauses)
    });
    for mut child in children.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    match result {
        Ok(((kill_pid_index, detect), pauses)) => {
            println!("| processes | killed | until every other lists it dead |");
            println!("|---:|---:|---:|");
            println!(
                "| {n} | #{kill_pid_index} with SIGKILL | {} |\n",
                secs(detect)
            );
            println!("With 8 members the suspicion timeout is 4 s with every confirmation and 24 s with none.\n");
            println!("| SIGSTOP for | looks at every member's view while paused and 5 s after | views listing it dead | until every other lists it dead | after SIGCONT, until every other lists it alive |");
            println!("|---:|---:|---:|---:|---:|");
            for pause in pauses {
                println!(
                    "| {} | {} | {} | {} | {} |",
                    secs(pause.paused_for),
                    pause.looks,
                    pause.dead_views,
                    pause.all_dead.map_or("never".to_string(), secs),
                    secs(pause.alive_again),
                );
            }
            println!();
        }
        Err(_) => println!("(the process scenario failed; see the panic above)\n"),
    }
}

fn members_over_http(http_port: u16) -> Option<Vec<(String, String)>> {
    let members = dnd::dev::members(std::net::SocketAddr::from(([127, 0, 0, 1], http_port)))?;
    Some(members.into_iter().map(|m| (m.id, m.state)).collect())
}

fn procs_measure(ports: &[(u16, u16)]) -> (usize, Duration) {
    let n = ports.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<_> = ports
            .iter()
            .map(|(_, http)| members_over_http(*http))
            .collect();
        if views.iter().all(|v| {
            v.as_ref()
                .is_some_and(|m| m.len() == n && m.iter().all(|(_, s)| s == "alive"))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "the processes did not converge");
        std::thread::sleep(Duration::from_millis(100));
    }
    let victim = 5;
    let victim_http = ports[victim].1;
    let victim_id = health_id(victim_http).expect("the victim's id");
    let pid = pid_on_port(victim_http);
    let killed = Instant::now();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    loop {
        let all = ports
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .all(|(_, (_, http))| {
                members_over_http(*http)
                    .is_some_and(|m| m.iter().any(|(id, s)| id == &victim_id && s == "dead"))
            });
        if all {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(120),
            "never declared dead"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (victim, killed.elapsed())
}

struct PauseFigures {
    paused_for: Duration,
    looks: usize,
    dead_views: usize,
    all_dead: Option<Duration>,
    alive_again: Duration,
}

/// SIGSTOPs one live process for less than the fastest suspicion timeout,
/// then for longer than the slowest, watching every other member's view.
fn procs_pause(ports: &[(u16, u16)], already_dead: usize) -> Vec<PauseFigures> {
    let victim = 2;
    let victim_http = ports[victim].1;
    let victim_id = health_id(victim_http).expect("the victim's id");
    let pid = pid_on_port(victim_http).to_string();
    let observers: Vec<u16> = ports
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim && *i != already_dead)
        .map(|(_, (_, http))| *http)
        .collect();
    let states = || -> Vec<String> {
        observers
            .iter()
            .filter_map(|http| members_over_http(*http))
            .map(|m| {
                m.into_iter()
                    .find(|(id, _)| id == &victim_id)
                    .map(|(_, s)| s)
                    .unwrap_or_default()
            })
            .collect()
    };
    let signal = |sig: &str| {
        Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
    };
    let mut figures = Vec::new();
    for paused_for in [Duration::from_secs(3), Duration::from_secs(30)] {
        let (mut looks, mut dead_views, mut all_dead) = (0, 0, None);
        let stopped = Instant::now();
        signal("-STOP");
        while stopped.elapsed() < paused_for {
            let views = states();
            looks += views.len();
            dead_views += views.iter().filter(|s| *s == "dead").count();
            if all_dead.is_none()
                && views.len() == observers.len()
                && views.iter().all(|s| s == "dead")
            {
                all_dead = Some(stopped.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal("-CONT");
        let resumed = Instant::now();
        let alive_again = loop {
            let views = states();
            looks += views.len();
            dead_views += views.iter().filter(|s| *s == "dead").count();
            if views.len() == observers.len() && views.iter().all(|s| s == "alive") {
                break resumed.elapsed();
            }
            assert!(
                resumed.elapsed() < Duration::from_secs(60),
                "the resumed process never came back alive"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Keep looking a while: a late death would show here.
        while resumed.elapsed() < Duration::from_secs(5) {
            let views = states();
            looks += views.len();
            dead_views += views.iter().filter(|s| *s == "dead").count();
            std::thread::sleep(Duration::from_millis(50));
        }
        figures.push(PauseFigures {
            paused_for,
            looks,
            dead_views,
            all_dead,
            alive_again,
        });
    }
    figures
}

fn health_id(http_port: u16) -> Option<String> {
    dnd::dev::node_id(std::net::SocketAddr::from(([127, 0, 0, 1], http_port)))
}

/// The pid of the `dnd` process serving HTTP on `port`, from its command line.
fn pid_on_port(port: u16) -> u32 {
    let needle = format!("--server-port\0{port}\0");
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Ok(entry) = entry else { continue };
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                return pid;
            }
        }
    }
    panic!("no dnd process serves port {port}");
}

fn main() {
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    println!("# SWIM membership figures\n");
    println!("Defaults: T = 1 s, probe timeout 500 ms, k = 3, suspicion ×4 (max ×6), retransmit ×4, gossip every 200 ms to 3, push-pull 30 s, a dead member pinged every 1 s, datagrams ≤ 1400 B.\n");
    let scenarios: [(&str, fn()); 8] = [
        ("detect", detect),
        ("traffic", traffic),
        ("rejoin", rejoin),
        ("loss", loss),
        ("join", join),
        ("scale", scale),
        ("real", real),
        ("procs", procs),
    ];
    for (name, scenario) in scenarios {
        if run(name) {
            let start = Instant::now();
            scenario();
            eprintln!("{name}: {:.1} s", start.elapsed().as_secs_f64());
        }
    }
}
