//! A group of loops leaks nothing: after it ran and served clients, the process has exactly
//! the fds and the threads it had before. (A binary of its own: it counts `/proc/self`.)

mod loop_support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use refloop::framing::Lines;
use refloop::reactor::testing::open_fd_count;
use refloop::{Config, Conn, Handler, Loops, Sharing};

struct Echo;

impl Handler<Lines> for Echo {
    fn on_message(&mut self, conn: &Conn<'_, Lines>, msg: String) {
        conn.send(&msg).expect("a line within the limit");
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// One group lifetime: bind, serve `clients` round trips on each of its loops, shut down.
fn one_lifetime(sharing: Sharing, clients: usize) {
    let group = Loops::bind(
        "127.0.0.1:0",
        2,
        sharing,
        Lines::new(1024),
        Config::default(),
    )
    .expect("bind");
    let addr = group.local_addr().unwrap();
    let handle = group.handle();
    let thread = std::thread::spawn(move || group.run(|_| Echo));
    for i in 0..clients {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(format!("hello {i}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        assert_eq!(line, format!("hello {i}\n"));
    }
    handle.shutdown();
    let handlers = thread.join().expect("group thread").expect("run");
    assert_eq!(handlers.len(), 2);
}

#[test]
fn a_group_of_loops_leaves_no_fd_and_no_thread_behind() {
    // A first lifetime warms up whatever the runtime opens once.
    one_lifetime(Sharing::ReusePort, 4);
    let (fds, threads) = (open_fd_count().unwrap(), thread_count());
    for sharing in [Sharing::ReusePort, Sharing::Exclusive] {
        one_lifetime(sharing, 50);
    }
    assert_eq!(open_fd_count().unwrap(), fds, "fds before and after");
    assert_eq!(thread_count(), threads, "threads before and after");
}
