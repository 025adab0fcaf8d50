import Glibc
import Synchronization

/// Ports for daemons a test must name a port for in advance (a replication listener a primary's mirror
/// record points at, an API port), chosen below the kernel's ephemeral range.
///
/// Binding port 0 and handing the number on does not work on a busy machine: the number comes from the
/// ephemeral range (32768-60999), from which every outgoing connection on the machine also takes its
/// local port, and one did take a replication port between the test's check and the daemon's bind. Below
/// that range only explicit binds compete, so each test process walks its own slice of it from a random
/// start and takes the next port that binds.
public enum LoopbackPort {
    static let range: Range<Int> = 20_000..<32_768
    private static let next = Mutex(Int.random(in: range))

    /// A loopback port that was free just now and that no other caller of this process was given.
    public static func free() -> Int {
        for _ in range {
            let port = next.withLock { port -> Int in
                defer { port = port + 1 < range.upperBound ? port + 1 : range.lowerBound }
                return port
            }
            if bindable(port) { return port }
        }
        fatalError("no free loopback port in \(range)")
    }

    private static func bindable(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
