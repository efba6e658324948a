//! Real ccache (the Debian package) building a small C project against a cache
//! server: build, throw the local cache away, build again, count remote hits.

use std::path::Path;
use std::process::Command;

use super::Server;

const SOURCES: &[(&str, &str)] = &[
    ("util.h", "int add(int a, int b);\nint twice(int a);\n"),
    ("add.c", "#include \"util.h\"\nint add(int a, int b) { return a + b; }\n"),
    ("twice.c", "#include \"util.h\"\nint twice(int a) { return add(a, a); }\n"),
    ("main.c", "#include \"util.h\"\n#include <stdio.h>\nint main(void) { printf(\"%d\\n\", twice(21)); return 0; }\n"),
];

pub fn compile_project(project: &Path, cache_dir: &Path, remote: &str) {
    for (name, _) in SOURCES.iter().filter(|(n, _)| n.ends_with(".c")) {
        let object = name.replace(".c", ".o");
        let output = Command::new("ccache")
            .args(["gcc", "-O2", "-c", name, "-o", &object])
            .current_dir(project)
            .env("CCACHE_DIR", cache_dir)
            .env("CCACHE_REMOTE_STORAGE", remote)
            .env("CCACHE_CONFIGPATH", cache_dir.join("ccache.conf"))
            .output()
            .expect("running ccache; ./test.sh installs it (Debian package ccache)");
        assert!(
            output.status.success(),
            "ccache gcc {name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

pub fn stat(cache_dir: &Path, counter: &str) -> u64 {
    let output = Command::new("ccache")
        .arg("--print-stats")
        .env("CCACHE_DIR", cache_dir)
        .env("CCACHE_CONFIGPATH", cache_dir.join("ccache.conf"))
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(counter)?.trim().parse().ok())
        .unwrap_or(0)
}

fn objects(project: &Path) -> Vec<Vec<u8>> {
    ["add.o", "twice.o", "main.o"]
        .iter()
        .map(|o| std::fs::read(project.join(o)).unwrap())
        .collect()
}

/// Builds the project once in `work` (local cache in `work/local`) against `remote`.
pub fn build_once(work: &Path, remote: &str) {
    let project = work.join("project");
    std::fs::create_dir_all(&project).unwrap();
    for (name, text) in SOURCES {
        std::fs::write(project.join(name), text).unwrap();
    }
    compile_project(&project, &work.join("local"), remote);
}

/// Builds, throws the local cache away, builds again: every object must come
/// from blobcache, byte for byte.
pub fn round_trip(server: &Server, layout: &str) {
    round_trip_to(
        &format!("http://{}/ccache|layout={layout}", server.addr),
        layout,
    );
}

/// [`round_trip`] against the remote storage URL `remote` (with its attributes:
/// layout, credentials), `label` naming it in failures.
pub fn round_trip_to(remote: &str, label: &str) {
    let layout = label;
    {
        let work = tempfile::tempdir().unwrap();
        let project = work.path().join("project");
        std::fs::create_dir(&project).unwrap();
        for (name, text) in SOURCES {
            std::fs::write(project.join(name), text).unwrap();
        }

        let first = work.path().join("local-1");
        compile_project(&project, &first, remote);
        assert_eq!(
            stat(&first, "remote_storage_hit"),
            0,
            "{layout}: nothing cached yet"
        );
        let built = objects(&project);
        // A fresh local cache: every object must come from blobcache.
        for object in ["add.o", "twice.o", "main.o"] {
            std::fs::remove_file(project.join(object)).unwrap();
        }
        let second = work.path().join("local-2");
        compile_project(&project, &second, remote);
        assert_eq!(
            stat(&second, "remote_storage_hit"),
            3,
            "{layout}: remote hits"
        );
        assert_eq!(
            stat(&second, "cache_miss"),
            0,
            "{layout}: no compilation ran"
        );
        assert_eq!(
            objects(&project),
            built,
            "{layout}: objects from the cache equal the compiled ones"
        );
    }
}
