import CairnTestSupport
import Foundation
import ISCSIProtocol
import NIOCore
import Testing

/// `ISCSIFuzzing.run` over a few thousand seeded inputs: valid login, CHAP and EXTENDED COPY PDUs with
/// bytes flipped, cut or repeated, and plain noise. Passing means nothing trapped.
@Suite struct ISCSIFuzzingTests {
    static let seed = TestSeed.make()

    /// Well-formed PDUs the mutations start from.
    static var corpus: [[UInt8]] {
        var login = ISCSIPDU(
            opcode: .loginRequest,
            data: ISCSITextParameters.encode([
                ("InitiatorName", "iqn.a:b"), ("TargetName", "iqn.c:d"), ("AuthMethod", "CHAP,None"), ("CHAP_A", "5"),
                ("CHAP_N", "fuzz"), ("CHAP_R", "0x00112233445566778899aabbccddeeff"), ("CHAP_I", "3"), ("CHAP_C", "0x0102"),
            ]))
        login.flags = 0x81
        var copy = ISCSIPDU(
            opcode: .scsiCommand,
            data: SCSIExtendedCopyTests.list(
                targets: [SCSIExtendedCopyTests.target(5), SCSIExtendedCopyTests.target(6)],
                segments: [SCSIExtendedCopyTests.segment(source: 0, destination: 1, blocks: 8, from: 0, to: 8)]))
        copy.flags = 0x80
        copy.setByte(SCSICommand.Opcode.extendedCopy, 32)
        copy.setUInt32(UInt32(copy.data.readableBytes), 42)
        var nop = ISCSIPDU(opcode: .nopOut, data: ByteBuffer(bytes: [1, 2, 3]))
        nop.isImmediate = true
        return [login, copy, nop].map { Array($0.encoded().readableBytesView) }
    }

    @Test func seededInputsNeverTrap() {
        print("ISCSIFuzzingTests seed: \(Self.seed) (CAIRN_SEED=\(Self.seed) replays it)")
        var random = SeededGenerator(seed: Self.seed)
        let corpus = Self.corpus
        var decoded = 0
        for round in 0..<4000 {
            var input: [UInt8] = [UInt8.random(in: 0...7, using: &random)]
            if round % 4 == 3 {
                input += (0..<Int.random(in: 0...400, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                for _ in 0..<Int.random(in: 1...3, using: &random) {
                    var pdu = corpus[Int.random(in: 0..<corpus.count, using: &random)]
                    for _ in 0..<Int.random(in: 0...8, using: &random) {
                        let at = Int.random(in: 0..<pdu.count, using: &random)
                        switch Int.random(in: 0..<3, using: &random) {
                        case 0: pdu[at] = UInt8.random(in: 0...255, using: &random)
                        case 1: pdu.removeSubrange(at...)
                        default: pdu.insert(contentsOf: pdu[at...].prefix(16), at: at)
                        }
                        if pdu.isEmpty { break }
                    }
                    input += pdu
                }
            }
            decoded += ISCSIFuzzing.run(data: input)
        }
        // The corpus itself decodes: the runs above reached the parsers, not only the decoder's refusals.
        #expect(ISCSIFuzzing.run(data: [0] + Self.corpus.flatMap { $0 }) == Self.corpus.count)
        #expect(decoded > 0, "seed \(Self.seed)")
    }
}
