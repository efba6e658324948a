//! Real Gradle (Debian's `gradle` 4.4.1, which has the HTTP build cache)
//! building a small Java project against blobcache with `--build-cache`.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{client, run_ok, write_files};

/// Debian's gradle; none (or a failure in CI) without it.
pub fn gradle() -> Option<PathBuf> {
    client("gradle", PathBuf::from("/usr/bin/gradle"))
}

/// A Java project whose only remote-cacheable task is `compileJava`.
pub struct Project {
    dir: tempfile::TempDir,
    binary: PathBuf,
}

impl Project {
    /// `url` ends in `/` (Gradle requires it); `password` is sent as Basic
    /// credentials, pre-emptively, on every request.
    pub fn new(url: &str, password: Option<&str>) -> Option<Project> {
        let binary = gradle()?;
        let dir = tempfile::tempdir().unwrap();
        let credentials = password
            .map(|p| format!("credentials {{ username = 'gradle'; password = '{p}' }}"))
            .unwrap_or_default();
        let settings = format!(
            "rootProject.name = 'sample'\n\
             buildCache {{\n  local {{ enabled = false }}\n  remote(HttpBuildCache) {{\n    \
             url = '{url}'\n    push = true\n    {credentials}\n  }}\n}}\n"
        );
        write_files(
            dir.path(),
            &[
                ("settings.gradle", &settings),
                ("build.gradle", "apply plugin: 'java'\n"),
                (
                    "src/main/java/sample/Greeting.java",
                    "package sample;\n\npublic class Greeting {\n    public static String greet(String name) {\n        return \"Hello, \" + name;\n    }\n}\n",
                ),
                (
                    "src/main/java/sample/Main.java",
                    "package sample;\n\npublic class Main {\n    public static void main(String[] args) {\n        System.out.println(Greeting.greet(\"blobcache\"));\n    }\n}\n",
                ),
            ],
        );
        Some(Project { dir, binary })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `gradle clean build --build-cache`; its output. Not `--offline`:
    /// Gradle turns the remote cache off then.
    pub fn build(&self) -> String {
        run_ok(
            Command::new(&self.binary)
                .args([
                    "--no-daemon",
                    "--build-cache",
                    "--console=plain",
                    "clean",
                    "build",
                ])
                .current_dir(self.path())
                .env("GRADLE_USER_HOME", self.path().join(".gradle-home")),
            "gradle build",
        )
    }

    pub fn classes(&self) -> Vec<Vec<u8>> {
        ["Greeting", "Main"]
            .iter()
            .map(|class| {
                std::fs::read(
                    self.path()
                        .join(format!("build/classes/java/main/sample/{class}.class")),
                )
                .unwrap()
            })
            .collect()
    }
}

/// Builds, cleans, builds again: `compileJava` must come from the cache
/// (`FROM-CACHE`) with the classes of the first build.
pub fn round_trip(url: &str, password: Option<&str>) -> Option<Project> {
    let project = Project::new(url, password)?;
    let cold = project.build();
    assert!(!cold.contains("FROM-CACHE"), "{cold}");
    assert!(!cold.contains("remote build cache was disabled"), "{cold}");
    let built = project.classes();
    let warm = project.build();
    assert!(warm.contains(":compileJava FROM-CACHE"), "{warm}");
    assert_eq!(project.classes(), built, "classes came from the cache");
    Some(project)
}
