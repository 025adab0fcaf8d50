import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP connection to the fuzzed daemon: the fuzzer's callback is synchronous, and a plain
/// socket keeps the client side out of the event loops under test.
struct LoopbackConnection: ~Copyable {
    /// A server that neither answers nor closes within this long after the client's EOF is hung:
    /// that is a finding, not a slow input.
    static let closeDeadlineSeconds = 20

    private let descriptor: Int32

    init(port: UInt16) {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { fatalError("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if connected != 0 && errno == EINTR {
            // libFuzzer's timeout timer (SIGALRM) interrupts syscalls; the connect goes on without us.
            connected = Self.finishInterruptedConnect(descriptor)
        }
        guard connected == 0 else { fatalError("connect to the fuzzed daemon: \(String(cString: strerror(errno)))") }
        var timeout = timeval(tv_sec: Self.closeDeadlineSeconds, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(descriptor) }

    /// Waits for a connect that a signal interrupted; 0 once connected, else -1 with `errno` set.
    private static func finishInterruptedConnect(_ descriptor: Int32) -> Int32 {
        var request = pollfd(fd: descriptor, events: Int16(POLLOUT), revents: 0)
        while poll(&request, 1, Int32(closeDeadlineSeconds * 1000)) < 0 && errno == EINTR {}
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(descriptor, SOL_SOCKET, SO_ERROR, &error, &length) == 0 else { return -1 }
        errno = error
        return error == 0 ? 0 : -1
    }

    /// Sends everything; false once the server has closed (a refused handshake does that).
    @discardableResult
    func send(_ bytes: [UInt8]) -> Bool {
        var sent = 0
        while sent < bytes.count {
            let count = bytes.withUnsafeBytes {
                Glibc.send(descriptor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL))
            }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return false }
            sent += count
        }
        return true
    }

    /// Exactly `count` bytes, or nil when the server closed first.
    func receive(_ count: Int) -> [UInt8]? {
        var bytes = [UInt8](repeating: 0, count: count)
        var received = 0
        while received < count {
            let n = bytes.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress! + received, count - received, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                fatalError("the daemon sent nothing for \(Self.closeDeadlineSeconds) s while an answer was due")
            }
            guard n > 0 else { return nil }
            received += n
        }
        return bytes
    }

    /// Ends the client's side and reads until the server closes: every request sent must be answered
    /// or the connection closed, within the deadline.
    func finish() {
        shutdown(descriptor, Int32(SHUT_WR))
        var sink = [UInt8](repeating: 0, count: 64 << 10)
        while true {
            let n = sink.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress!, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                fatalError("the daemon did not close within \(Self.closeDeadlineSeconds) s of the client's EOF")
            }
            if n <= 0 { return }
        }
    }
}
